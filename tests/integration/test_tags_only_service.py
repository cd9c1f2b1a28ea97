"""Tags-only data through the service: a zip of images + labels.csv uploaded, two rounds of the real stages
on a real worker (embedded SQLite database and broker, as ``make run``), round 2's pseudo labels downloaded."""

from __future__ import annotations

from pycocotools.coco import COCO

from integration import harness
from tiny_overrides import TINY_OVERRIDES
from wsis_core.data.convert import write_tagged_folder
from wsis_core.data.synth import generate_dataset

NO_GROUND_TRUTH = "no ground truth for split val: metrics not computed"


def test_upload_and_two_rounds_without_any_mask(tmp_path, monkeypatch):
    generate_dataset(tmp_path / "voc", n_train=10, n_val=4, size=64, seed=5)
    tags = write_tagged_folder(tmp_path / "voc", tmp_path / "tags", ["train", "val"], with_ground_truth=False)
    settings = harness.service_settings(monkeypatch, tmp_path, tmp_path / "data", stage_backend="wsis_core.rounds",
                                        **harness.embedded_service_urls(tmp_path))
    log = tmp_path / "worker.log"
    with harness.api_client(settings) as client, harness.celery_worker(settings, log):
        uploaded = client.post("/api/datasets/upload", data={"name": "tags"},
                               files={"file": ("tags.zip", harness.zip_folder(tags), "application/zip")})
        assert uploaded.status_code == 201, uploaded.text
        dataset = uploaded.json()
        assert dataset["ground_truth"]["val"]["ground_truth"] is False
        run = client.post("/api/runs", json={"dataset_id": dataset["id"],
                                             "config": {"profile": "tiny", "overrides": TINY_OVERRIDES}}).json()
        finished = []
        for _ in range(2):
            launched = client.post(f"/api/runs/{run['id']}/rounds")
            assert launched.status_code == 202, launched.text
            finished.append(harness.wait_for_round(client, launched.json()["id"], timeout_s=900))
            assert finished[-1]["status"] == "succeeded", harness.log_tail(log)
        labels = client.get(f"/api/rounds/{finished[1]['id']}/pseudo-labels")
        metrics = client.get(f"/api/runs/{run['id']}/metrics").json()
    assert [r["number"] for r in finished] == [1, 2]
    for round_ in finished:
        evaluate = next(job for job in round_["jobs"] if job["stage"] == "evaluate")
        assert evaluate["message"] == NO_GROUND_TRUTH
        assert round_["metrics"] == []
    assert metrics == []
    assert labels.status_code == 200
    (tmp_path / "pseudo_labels.json").write_bytes(labels.content)
    assert len(COCO(str(tmp_path / "pseudo_labels.json")).getImgIds()) == 10
