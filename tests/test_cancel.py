"""Cancelling a running stage stops it within seconds whatever its progress (issue 19, item 3)."""

from __future__ import annotations

import shutil

import pytest

from integration import harness
from services.common import jobs
from services.common.db import session_scope
from services.common.models import Job
from services.workers import dispatch


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stage_whose_progress_never_moves_sees_its_cancellation_after_cancel_check_s(tmp_path, monkeypatch,
                                                                                      synth_dataset):
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))
    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)
    with harness.api_client(settings) as client:
        job_id = harness.start_round(client)["jobs"][0]["id"]
        with session_scope(settings.database_url) as session:
            ctx = jobs.start(session, job_id, "task-1", "running on cpu", settings.job_lease_s)
        clock = FakeClock()
        report = jobs.ProgressReporter(settings.database_url, ctx, clock=clock)
        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        for step in range(1, 1000):  # a millionth of the stage per step: never a 1 % move
            report(step, 10**9)
        clock.now += jobs.CANCEL_CHECK_S
        with pytest.raises(jobs.JobCancelled):
            report(1000, 10**9)


def test_a_worker_spinning_in_a_cancelled_stage_is_free_for_the_next_round(tmp_path, monkeypatch, synth_dataset):
    """A real worker: the cancelled stage reports a billionth of progress per step; the worker must come back."""
    data_root = harness.data_root_with(tmp_path, synth_dataset)
    shutil.copytree(data_root / "synth", data_root / "other")
    (data_root / "synth" / "spin_cues").touch()  # stays: only the cancellation can end the stage
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, **harness.embedded_service_urls(tmp_path))
    log = tmp_path / "worker.log"
    with harness.api_client(settings) as client, harness.celery_worker(settings, log):
        spinning = harness.start_round(client)
        job = harness.wait_for_job(client, spinning["id"], "cues", lambda job: job["status"] == "running")
        assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
        other = client.post("/api/datasets", json={"name": "other", "path": "other"}).json()
        run = client.post("/api/runs", json={"dataset_id": other["id"]}).json()
        next_round = client.post(f"/api/runs/{run['id']}/rounds").json()
        finished = harness.wait_for_round(client, next_round["id"])
    assert finished["status"] == "succeeded", harness.log_tail(log)
    assert "wsis.stage.cues" in log.read_text() and "'cancelled'" in log.read_text()
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job["id"]).status == "cancelled"
