"""REST API on SQLite with the fake stage backend; rounds run eagerly (Celery ``task_always_eager``)."""

from __future__ import annotations

import hashlib

import pytest
from pycocotools.coco import COCO
from sqlalchemy import update

from integration import fake_rounds, harness
from services.common.db import sessionmaker_for
from services.common.models import Artifact
from services.workers import dispatch

pytestmark = pytest.mark.usefixtures("eager_tasks")


@pytest.fixture
def data_root(tmp_path, synth_dataset):
    """WSIS_DATA_ROOT of one test, holding a copy of the synthetic dataset as ``synth``."""
    return harness.data_root_with(tmp_path, synth_dataset)


@pytest.fixture
def settings(tmp_path, monkeypatch, data_root):
    return harness.service_settings(monkeypatch, tmp_path, data_root)


@pytest.fixture
def client(settings):
    with harness.api_client(settings) as client:
        yield client


@pytest.fixture
def run_id(client):
    dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"})
    assert dataset.status_code == 201, dataset.text
    run = client.post("/api/runs", json={"dataset_id": dataset.json()["id"], "config": {"profile": "tiny", "seed": 1}})
    assert run.status_code == 201, run.text
    return run.json()["id"]


def test_health_reports_database_and_broker(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_is_503_when_the_broker_is_down(tmp_path, monkeypatch, data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, broker_url="redis://127.0.0.1:9/0")
    with harness.api_client(settings) as client:
        response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("degraded", "ok")
    assert body["broker"].startswith("unreachable")


def test_openapi_lists_the_routes(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/health", "/api/datasets", "/api/runs/{run_id}/rounds", "/api/rounds/{round_id}/pseudo-labels",
            "/api/jobs/{job_id}/cancel", "/api/runs/{run_id}/metrics"} <= set(paths)


def test_dataset_registration_reads_classes_and_counts(client, synth_dataset):
    created = client.post("/api/datasets", json={"name": "synth", "path": "./synth/"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["path"] == "synth"
    assert (body["num_train_images"], body["num_val_images"]) == (8, 4)
    assert body["classes"] == (synth_dataset / "classes.txt").read_text().split()
    assert client.get(f"/api/datasets/{body['id']}").json() == body
    assert client.get("/api/datasets").json() == [body]
    duplicate = client.post("/api/datasets", json={"name": "synth", "path": "synth"})
    assert duplicate.status_code == 409


@pytest.mark.parametrize("path", ["..", "../..", "/etc", "data/../../x", "escape"])
def test_dataset_paths_outside_the_data_root_are_400(client, settings, tmp_path, path):
    (settings.data_root / "escape").symlink_to(tmp_path / "artifacts", target_is_directory=True)
    response = client.post("/api/datasets", json={"name": "x", "path": path})
    assert response.status_code == 400
    assert "outside WSIS_DATA_ROOT" in response.json()["detail"]


def test_a_folder_that_is_no_dataset_is_400_without_server_paths(client, settings):
    response = client.post("/api/datasets", json={"name": "x", "path": "missing"})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "dataset folder not found" in detail and str(settings.data_root) not in detail


@pytest.mark.parametrize(
    ("method", "url", "body", "expected"),
    [
        ("post", "/api/runs", {"dataset_id": 1, "config": {"profile": "huge"}},
         "body.config.profile: Input should be 'tiny' or 'paper'"),
        ("post", "/api/runs", {"dataset_id": 1, "config": {"overrides": {"cls.epochs": -1}}}, "cls.epochs"),
        ("post", "/api/runs", {"dataset_id": 1, "config": {"sed": 3}}, "body.config.sed: Extra inputs"),
        ("post", "/api/runs", {"dataset_id": 1, "config": {"overrides": {"seed": 3}}}, "not in overrides"),
        ("post", "/api/runs", {"dataset_id": 1, "config": {"supervision": "box"}}, "body.config.supervision"),
        ("post", "/api/runs", {"dataset_id": "one"}, "body.dataset_id"),
        ("post", "/api/runs", {"dataset_id": 2**40}, "less than or equal to 2147483647"),
        ("post", "/api/datasets", {"name": "x"}, "body.path: Field required"),
        ("post", "/api/datasets", {"name": "x", "path": "a", "train_split": "../t"}, "body.train_split"),
        ("get", "/api/runs/99999999999999999999", None, "path.run_id"),
        ("get", "/api/rounds/0", None, "path.round_id"),
        ("post", "/api/jobs/abc/cancel", None, "path.job_id"),
    ],
)
def test_bad_input_is_422_with_a_readable_message(client, method, url, body, expected):
    response = client.request(method.upper(), url, json=body)
    assert response.status_code == 422
    assert expected in response.json()["detail"]


def test_malformed_json_is_422(client):
    response = client.post("/api/runs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "url"),
    [("get", "/api/datasets/7"), ("get", "/api/runs/7"), ("get", "/api/runs/7/metrics"), ("post", "/api/runs/7/rounds"),
     ("get", "/api/rounds/7"), ("get", "/api/rounds/7/artifacts"), ("get", "/api/rounds/7/pseudo-labels"),
     ("post", "/api/jobs/7/cancel")],
)
def test_unknown_ids_are_404(client, method, url):
    response = client.request(method.upper(), url)
    assert response.status_code == 404
    assert "7 not found" in response.json()["detail"]


def test_run_for_unknown_dataset_is_404(client):
    assert client.post("/api/runs", json={"dataset_id": 5}).status_code == 404


def test_run_keeps_its_config_with_defaults(client, run_id):
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["config"] == {"profile": "tiny", "overrides": {}, "supervision": "weak", "ccgr": True,
                             "box_source": "mil", "seed": 1}
    assert run["rounds"] == []
    assert [r["id"] for r in client.get("/api/runs").json()] == [run_id]


def test_a_round_runs_every_stage_and_records_artifacts_and_metrics(client, settings, run_id):
    launched = client.post(f"/api/runs/{run_id}/rounds")
    assert launched.status_code == 202, launched.text
    round_ = client.get(f"/api/rounds/{launched.json()['id']}").json()
    assert (round_["number"], round_["status"]) == (1, "succeeded")
    assert [(j["stage"], j["queue"], j["status"], j["progress"]) for j in round_["jobs"]] == [
        (stage, "gpu" if stage in fake_rounds.GPU_STAGES else "cpu", "succeeded", 1.0) for stage in fake_rounds.STAGES
    ]
    for job in round_["jobs"]:
        assert job["started_at"] <= job["finished_at"] and job["attempts"] == 1 and job["celery_task_id"]
    assert {(m["split"], m["name"]): m["value"] for m in round_["metrics"]} == {
        ("val", name): value for name, value in fake_rounds.METRICS.items()
    }
    artifacts = client.get(f"/api/rounds/{round_['id']}/artifacts").json()
    assert sorted((a["stage"], a["kind"]) for a in artifacts) == [
        ("cues", "score_maps"), ("evaluate", "metrics"), ("mil", "mil_boxes"), ("pseudo_labels", "pseudo_labels")
    ]
    for artifact in artifacts:
        path = settings.artifact_root / artifact["path"]
        assert path.exists() and artifact["path"].startswith(f"runs/{run_id}/round_1/")
        if path.is_file():
            assert artifact["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert artifact["size"] == path.stat().st_size
    assert client.get(f"/api/runs/{run_id}").json()["rounds"][0]["status"] == "succeeded"


def test_pseudo_labels_download_is_a_coco_attachment_with_sha256_etag(client, run_id, tmp_path):
    round_id = client.post(f"/api/runs/{run_id}/rounds").json()["id"]
    response = client.get(f"/api/rounds/{round_id}/pseudo-labels")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    (tmp_path / "labels.json").write_bytes(response.content)
    coco = COCO(str(tmp_path / "labels.json"))
    assert len(coco.getImgIds()) == 8 and len(coco.getAnnIds()) > 0
    again = client.get(f"/api/rounds/{round_id}/pseudo-labels", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_an_artifact_path_leaving_the_store_is_never_served(client, settings, run_id):
    round_id = client.post(f"/api/runs/{run_id}/rounds").json()["id"]
    with sessionmaker_for(settings.database_url)() as session, session.begin():
        session.execute(update(Artifact).where(Artifact.round_id == round_id).values(path="../../../../etc/passwd"))
    response = client.get(f"/api/rounds/{round_id}/pseudo-labels")
    assert response.status_code == 404
    assert "outside the artifact store" in response.json()["detail"]


def test_run_metrics_lists_every_round(client, run_id):
    first = client.post(f"/api/runs/{run_id}/rounds").json()
    second = client.post(f"/api/runs/{run_id}/rounds").json()
    assert (first["number"], second["number"]) == (1, 2)
    metrics = client.get(f"/api/runs/{run_id}/metrics").json()
    assert [(m["round"], m["round_id"], m["split"]) for m in metrics] == [
        (1, first["id"], "val"), (2, second["id"], "val")
    ]
    assert all(m["mAP_r@0.5"] == fake_rounds.METRICS["mAP_r@0.5"] and m["coco_segm_AP"] is None for m in metrics)


def test_a_failing_stage_fails_the_round_and_cancels_the_rest(client, run_id, data_root):
    (data_root / "synth" / "fail_mil").touch()
    round_ = client.post(f"/api/runs/{run_id}/rounds").json()
    assert round_["status"] == "failed"
    status = {j["stage"]: (j["status"], j["error"]) for j in round_["jobs"]}
    assert status["cues"] == ("succeeded", None)
    assert status["mil"] == ("failed", "mil: failure injected by the dataset folder")
    assert status["pseudo_labels"][0] == status["evaluate"][0] == "cancelled"
    assert client.get(f"/api/rounds/{round_['id']}/pseudo-labels").status_code == 404


def test_launch_is_409_while_a_round_is_active_and_cancel_stops_it(client, run_id, monkeypatch):
    queued = []
    monkeypatch.setattr(dispatch, "enqueue", queued.extend)  # the broker holds the tasks: nothing runs yet
    round_ = client.post(f"/api/runs/{run_id}/rounds").json()
    assert round_["status"] == "queued"
    conflict = client.post(f"/api/runs/{run_id}/rounds")
    assert conflict.status_code == 409 and "still queued" in conflict.json()["detail"]
    first_job = round_["jobs"][0]["id"]
    cancelled = client.post(f"/api/jobs/{first_job}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/jobs/{first_job}/cancel").status_code == 409
    after = client.get(f"/api/rounds/{round_['id']}").json()
    assert after["status"] == "cancelled" and {j["status"] for j in after["jobs"]} == {"cancelled"}
    monkeypatch.undo()  # the broker works again: relaunching retries the same round
    retried = client.post(f"/api/runs/{run_id}/rounds").json()
    assert (retried["id"], retried["number"], retried["status"]) == (round_["id"], 1, "succeeded")


def test_broker_down_at_launch_is_503_and_fails_the_round(client, run_id, monkeypatch):
    def unreachable(_jobs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(dispatch, "enqueue", unreachable)
    response = client.post(f"/api/runs/{run_id}/rounds")
    assert response.status_code == 503
    assert client.get(f"/api/runs/{run_id}").json()["rounds"][0]["status"] == "failed"


def test_mutating_routes_need_the_bearer_token_when_one_is_set(tmp_path, monkeypatch, data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, api_token="s3cret")
    body = {"name": "synth", "path": "synth"}
    with harness.api_client(settings) as client:
        assert client.post("/api/datasets", json=body).status_code == 401
        wrong = client.post("/api/datasets", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.post("/api/jobs/1/cancel").status_code == 401
        assert client.post("/api/datasets", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 201
        assert client.get("/api/datasets").status_code == 200


def test_a_run_launches_its_rounds_to_launch_by_itself_and_jobs_record_their_device(client):
    dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()
    run = client.post("/api/runs", json={"dataset_id": dataset["id"], "rounds_to_launch": 3}).json()
    assert run["rounds_to_launch"] == 3
    first = client.post(f"/api/runs/{run['id']}/rounds").json()
    assert first["number"] == 1
    rounds = client.get(f"/api/runs/{run['id']}").json()["rounds"]
    assert [(r["number"], r["status"]) for r in rounds] == [(1, "succeeded"), (2, "succeeded"), (3, "succeeded")]
    jobs = client.get(f"/api/rounds/{rounds[2]['id']}").json()["jobs"]
    assert [job["stage"] for job in jobs] == list(fake_rounds.STAGES) and {job["device"] for job in jobs} == {"cpu"}
    assert client.post(f"/api/runs/{run['id']}/rounds").json()["number"] == 4
    assert len(client.get(f"/api/runs/{run['id']}").json()["rounds"]) == 4
    too_many = client.post("/api/runs", json={"dataset_id": dataset["id"], "rounds_to_launch": 51})
    assert too_many.status_code == 422 and "rounds_to_launch" in too_many.json()["detail"]
