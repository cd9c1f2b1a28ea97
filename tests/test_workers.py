"""Celery workers: idempotent re-delivery, leases and lost jobs, cancellation, failures, the artifact store, and a
real worker process."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from integration import fake_rounds, harness
from services.common import jobs, store
from services.common.db import session_scope
from services.common.models import Artifact, Job, Metric, utcnow
from services.common.paths import OutsideRootError
from services.workers import dispatch, recovery, tasks


@pytest.fixture
def settings(tmp_path, monkeypatch, synth_dataset):
    monkeypatch.setattr(fake_rounds, "COMPUTED", [])
    return harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))


@pytest.fixture
def client(settings):
    with harness.api_client(settings) as client:
        yield client


def count(settings, model) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def lapse_lease(settings, job_id: int) -> None:
    """Age the job's heartbeat past the lease, as if its worker had died."""
    with session_scope(settings.database_url) as session:
        stale = utcnow() - timedelta(seconds=settings.job_lease_s + 1)
        session.execute(update(Job).where(Job.id == job_id).values(status="running", heartbeat_at=stale))


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


def test_a_redelivered_task_neither_redoes_nor_duplicates_its_stage(client, settings, eager_tasks):
    round_ = harness.start_round(client)
    assert round_["status"] == "succeeded"
    computed, artifacts, metrics = list(fake_rounds.COMPUTED), count(settings, Artifact), count(settings, Metric)
    evaluate = round_["jobs"][-1]["id"]
    assert tasks.run_job(evaluate, "redelivered-after-success") == "skipped"
    lapse_lease(settings, evaluate)  # the worker died after the stage, before the ack
    assert tasks.run_job(evaluate, "redelivered-after-crash") == "succeeded"
    assert fake_rounds.COMPUTED == computed
    assert (count(settings, Artifact), count(settings, Metric)) == (artifacts, metrics)
    job = client.get(f"/api/rounds/{round_['id']}").json()["jobs"][-1]
    assert (job["status"], job["attempts"], job["celery_task_id"]) == ("succeeded", 2, "redelivered-after-crash")


def test_a_lost_job_is_queued_again_once_and_its_old_attempt_is_fenced_out(client, settings, eager_tasks, monkeypatch):
    sent, send = [], dispatch.enqueue
    monkeypatch.setattr(dispatch, "enqueue", sent.append)
    round_ = harness.start_round(client)
    first = round_["jobs"][0]["id"]
    with session_scope(settings.database_url) as session:
        old = jobs.start(session, first, "task-1", "running on cpu", settings.job_lease_s)
    # a live lease: nobody else runs the job, nor sends the next one (the holder does)
    assert tasks.run_job(first, "duplicate") == jobs.HELD and len(sent) == 1
    assert recovery.recover_lost_jobs(settings) == 0
    lapse_lease(settings, first)
    assert (recovery.recover_lost_jobs(settings), recovery.recover_lost_jobs(settings)) == (1, 0)
    assert [[job.id for job in queued] for queued in sent[1:]] == [[job["id"] for job in round_["jobs"]]]
    with session_scope(settings.database_url) as session:
        assert not jobs.heartbeat(session, old)
    with pytest.raises(jobs.JobCancelled):
        jobs.ProgressReporter(settings.database_url, old)(1, 2)
    monkeypatch.setattr(dispatch, "enqueue", send)  # the broker works: each finished stage sends the next
    send(sent[1])
    with session_scope(settings.database_url) as session:
        assert jobs.finish(session, old, [], {}) == "cancelled"
    round_ = client.get(f"/api/rounds/{round_['id']}").json()
    assert round_["status"] == "succeeded"
    assert [job["attempts"] for job in round_["jobs"]] == [2, 1, 1, 1]
    assert [stage for stage, _ in fake_rounds.COMPUTED] == list(fake_rounds.STAGES)


def test_cancelling_a_running_stage_stops_it_at_its_next_progress_report(client, settings, eager_tasks, monkeypatch):
    real_run_stage = fake_rounds.run_stage

    def cancelled_while_running(stage, **kwargs):
        if stage == "mil":
            with session_scope(settings.database_url) as session:
                jobs.cancel(session, session.scalar(select(Job).where(Job.stage == "mil")))
        return real_run_stage(stage, **kwargs)

    monkeypatch.setattr(fake_rounds, "run_stage", cancelled_while_running)
    round_ = harness.start_round(client)
    assert round_["status"] == "cancelled"
    assert [j["status"] for j in round_["jobs"]] == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert [stage for stage, _ in fake_rounds.COMPUTED] == ["cues"]


def test_an_unexpected_error_fails_the_job_with_its_message_and_is_raised(client, monkeypatch):
    def broken(stage, **kwargs):
        raise RuntimeError(f"{stage} exploded")

    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)
    monkeypatch.setattr(fake_rounds, "run_stage", broken)
    round_ = harness.start_round(client)
    with pytest.raises(RuntimeError, match="cues exploded"):
        tasks.run_job(round_["jobs"][0]["id"], "task-1")
    round_ = client.get(f"/api/rounds/{round_['id']}").json()
    assert round_["status"] == "failed"
    first = round_["jobs"][0]
    assert (first["status"], first["error"]) == ("failed", "RuntimeError: cues exploded")
    assert {j["status"] for j in round_["jobs"][1:]} == {"cancelled"}


def test_progress_reports_are_written_and_clamped(client, settings, monkeypatch):
    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)
    job_id = harness.start_round(client)["jobs"][0]["id"]
    with session_scope(settings.database_url) as session:
        ctx = jobs.start(session, job_id, "task-1", "running on cpu", settings.job_lease_s)
    report = jobs.ProgressReporter(settings.database_url, ctx)
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
    data_root = harness.data_root_with(tmp_path, synth_dataset)
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, **harness.embedded_service_urls(tmp_path))
    log = tmp_path / "worker.log"
    with harness.api_client(settings) as client, harness.celery_worker(settings, log):
        launched = harness.start_round(client)
        assert launched["status"] == "queued"
        round_ = harness.wait_for_round(client, launched["id"])
        assert round_["status"] == "succeeded", harness.log_tail(log)
        assert client.get(f"/api/rounds/{round_['id']}/pseudo-labels").status_code == 200
    assert all(j["celery_task_id"] and j["attempts"] == 1 for j in round_["jobs"])
