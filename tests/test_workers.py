"""Celery workers: idempotent re-delivery, cancellation, failures, the artifact store, and a real worker process."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select, update

from integration import fake_rounds, harness
from services.api.db import session_scope
from services.api.models import Artifact, Job, Metric
from services.api.paths import OutsideRootError
from services.workers import dispatch, jobs, store, tasks
from services.workers.celery_app import app as celery_app


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def settings(tmp_path, monkeypatch, synth_dataset):
    monkeypatch.setattr(fake_rounds, "COMPUTED", [])
    return harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))


@pytest.fixture
def client(settings):
    with harness.api_client(settings) as client:
        yield client


def start_round(client, config: dict | None = None) -> dict:
    """Register the dataset, create a run and launch its first round; returns the round body."""
    dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()
    run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": config or {}}).json()
    launched = client.post(f"/api/runs/{run['id']}/rounds")
    assert launched.status_code == 202, launched.text
    return launched.json()


def count(settings, model) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_every_stage_has_a_late_acking_task():
    for stage, task in tasks.STAGE_TASKS.items():
        assert task.name == f"wsis.stage.{stage}"
        assert task.acks_late and task.reject_on_worker_lost


def test_the_real_round_loop_has_a_task_for_each_of_its_stages():
    from wsis_core import rounds

    assert set(rounds.STAGES) | set(rounds.FULL_SUPERVISION_STAGES) <= set(tasks.STAGE_TASKS)


def test_stage_plan_routes_gpu_stages_and_rejects_unknown_stages(settings, monkeypatch):
    assert dispatch.stage_plan("weak") == [
        ("cues", "gpu"), ("mil", "gpu"), ("pseudo_labels", "cpu"), ("evaluate", "cpu")
    ]
    assert dispatch.stage_plan("full") == [("evaluate", "cpu")]
    monkeypatch.setattr(fake_rounds, "STAGES", (*fake_rounds.STAGES, "teleport"))
    with pytest.raises(RuntimeError, match="no Celery task for stage"):
        dispatch.stage_plan("weak")


def test_a_redelivered_task_neither_redoes_nor_duplicates_its_stage(client, settings, eager):
    round_ = start_round(client)
    assert round_["status"] == "succeeded"
    computed, artifacts, metrics = list(fake_rounds.COMPUTED), count(settings, Artifact), count(settings, Metric)
    evaluate = round_["jobs"][-1]["id"]
    assert tasks.run_job(evaluate, "redelivered-after-success") == "skipped"
    with session_scope(settings.database_url) as session:  # the worker died after the stage, before the ack
        session.execute(update(Job).where(Job.id == evaluate).values(status="running"))
    assert tasks.run_job(evaluate, "redelivered-after-crash") == "succeeded"
    assert fake_rounds.COMPUTED == computed
    assert (count(settings, Artifact), count(settings, Metric)) == (artifacts, metrics)
    job = client.get(f"/api/rounds/{round_['id']}").json()["jobs"][-1]
    assert (job["status"], job["attempts"], job["celery_task_id"]) == ("succeeded", 2, "redelivered-after-crash")


def test_cancelling_a_running_stage_stops_it_at_its_next_progress_report(client, settings, eager, monkeypatch):
    real_run_stage = fake_rounds.run_stage

    def cancelled_while_running(stage, **kwargs):
        if stage == "mil":
            with session_scope(settings.database_url) as session:
                jobs.cancel(session, session.scalar(select(Job).where(Job.stage == "mil")))
        return real_run_stage(stage, **kwargs)

    monkeypatch.setattr(fake_rounds, "run_stage", cancelled_while_running)
    round_ = start_round(client)
    assert round_["status"] == "cancelled"
    assert [j["status"] for j in round_["jobs"]] == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert [stage for stage, _ in fake_rounds.COMPUTED] == ["cues"]


def test_an_unexpected_error_fails_the_job_with_its_message_and_is_raised(client, monkeypatch):
    def broken(stage, **kwargs):
        raise RuntimeError(f"{stage} exploded")

    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)
    monkeypatch.setattr(fake_rounds, "run_stage", broken)
    round_ = start_round(client)
    with pytest.raises(RuntimeError, match="cues exploded"):
        tasks.run_job(round_["jobs"][0]["id"], "task-1")
    round_ = client.get(f"/api/rounds/{round_['id']}").json()
    assert round_["status"] == "failed"
    first = round_["jobs"][0]
    assert (first["status"], first["error"]) == ("failed", "RuntimeError: cues exploded")
    assert {j["status"] for j in round_["jobs"][1:]} == {"cancelled"}


def test_progress_reports_are_written_and_clamped(client, settings, monkeypatch):
    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)
    job_id = start_round(client)["jobs"][0]["id"]
    with session_scope(settings.database_url) as session:
        jobs.start(session, job_id, "task-1", "running on cpu")
    report = jobs.ProgressReporter(settings.database_url, job_id)
    report(3, 8)
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job_id).progress == pytest.approx(3 / 8)
    report(9, 8)
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job_id).progress == 1.0


def test_the_store_hashes_files_and_folders_and_refuses_outside_paths(tmp_path):
    root = tmp_path / "store"
    (root / "maps").mkdir(parents=True)
    (root / "labels.json").write_bytes(b"{}")
    (root / "maps" / "a.npz").write_bytes(b"a")
    (root / "maps" / "b.npz").write_bytes(b"bb")
    record = store.describe(root, "pseudo_labels", root / "labels.json")
    assert (record.path, record.size, record.sha256) == ("labels.json", 2, hashlib.sha256(b"{}").hexdigest())
    folder = store.describe(root, "score_maps", root / "maps")
    assert (folder.path, folder.size) == ("maps", 3)
    (root / "maps" / "b.npz").write_bytes(b"bB")
    assert store.describe(root, "score_maps", root / "maps").sha256 != folder.sha256
    (tmp_path / "elsewhere.json").write_bytes(b"{}")
    with pytest.raises(OutsideRootError):
        store.describe(root, "pseudo_labels", tmp_path / "elsewhere.json")


def test_a_real_worker_runs_a_round_on_the_embedded_broker(tmp_path, monkeypatch, synth_dataset):
    settings = harness.service_settings(
        monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset),
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.sqlite", result_backend=f"db+sqlite:///{tmp_path}/results.sqlite",
    )
    log = tmp_path / "worker.log"
    with harness.api_client(settings) as client, harness.celery_worker(settings, log):
        launched = start_round(client)
        assert launched["status"] == "queued"
        round_ = harness.wait_for_round(client, launched["id"])
        assert round_["status"] == "succeeded", harness.log_tail(log)
        assert client.get(f"/api/rounds/{round_['id']}/pseudo-labels").status_code == 200
    assert all(j["celery_task_id"] and j["attempts"] == 1 for j in round_["jobs"])
