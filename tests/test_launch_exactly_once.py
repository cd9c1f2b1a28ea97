"""Launch and retry are atomic, a task never runs a stage whose predecessor did not succeed, a job that no broker
holds because its sender (the API or a worker) was killed between writing and sending it is sent by the
recovery loop, and attempts are capped (issue 19, items 4, 5 and 9).

Items 4 and 5 run on both backends: the embedded SQLite database and broker, and PostgreSQL + Redis.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from integration import fake_rounds, harness
from services.common import jobs
from services.common.db import session_scope
from services.common.models import Job, Round, utcnow
from services.workers import dispatch, recovery, tasks
from services.workers.celery_app import app as celery_app

CONCURRENT_RETRIES = 20


@pytest.fixture(params=["embedded", "postgres+redis"])
def service_urls(request, tmp_path):
    if request.param == "embedded":
        yield harness.embedded_service_urls(tmp_path)
    else:
        with harness.live_service_urls() as urls:
            yield urls


@pytest.fixture
def data_root(tmp_path, synth_dataset):
    return harness.data_root_with(tmp_path, synth_dataset)


def test_concurrent_retries_of_a_failed_round_are_accepted_once(service_urls, tmp_path, monkeypatch, data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, **service_urls)
    with harness.api_server(settings, tmp_path / "api.log", harness.free_port()) as (_api, client):
        round_ = harness.start_round(client)  # no worker: its tasks wait in the broker
        assert client.post(f"/api/jobs/{round_['jobs'][0]['id']}/cancel").status_code == 200
        with ThreadPoolExecutor(CONCURRENT_RETRIES) as pool:
            codes = list(pool.map(lambda _: client.post(f"/api/runs/{round_['run_id']}/rounds").status_code,
                                  range(CONCURRENT_RETRIES)))
        after = client.get(f"/api/rounds/{round_['id']}").json()
    assert sorted(codes) == [202] + [409] * (CONCURRENT_RETRIES - 1), codes
    assert after["status"] == "queued" and {job["status"] for job in after["jobs"]} == {"queued"}


def test_an_api_killed_between_writing_a_round_and_sending_it_loses_nothing(service_urls, tmp_path, monkeypatch,
                                                                          data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, job_lease_s="2", **service_urls)
    dying = harness.dying_before_sending("cues")
    with harness.api_server(settings, tmp_path / "api.log", harness.free_port(), launcher=dying) as (api, client):
        dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()
        run_id = client.post("/api/runs", json={"dataset_id": dataset["id"]}).json()["id"]
        with pytest.raises(httpx.TransportError):  # the round is committed; the API dies sending its first task
            client.post(f"/api/runs/{run_id}/rounds")
        assert api.wait(timeout=30) == -signal.SIGKILL
    with harness.api_client(settings) as client:
        round_id = client.get(f"/api/runs/{run_id}").json()["rounds"][0]["id"]
        assert harness.broker_messages(settings) == 0
        assert client.post(f"/api/runs/{run_id}/rounds").status_code == 409  # still queued: the recovery sends it
        with harness.celery_worker(settings, tmp_path / "worker.log"):
            finished = harness.wait_for_round(client, round_id, timeout_s=60)
    assert finished["status"] == "succeeded", harness.log_tail(tmp_path / "worker.log")
    assert [job["attempts"] for job in finished["jobs"]] == [1] * len(fake_rounds.STAGES)
    with session_scope(settings.database_url) as session:
        assert session.get(Round, round_id).undispatched_since is None


def test_a_worker_killed_between_finishing_a_stage_and_sending_the_next_loses_nothing(service_urls, tmp_path,
                                                                                     monkeypatch, data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, job_lease_s="2", **service_urls)
    with harness.api_client(settings) as client:
        round_id = harness.start_round(client)["id"]
        dying = harness.dying_before_sending("mil")
        with harness.celery_worker(settings, tmp_path / "dying.log", launcher=dying) as worker:
            assert worker.wait(timeout=60) == -signal.SIGKILL, harness.log_tail(tmp_path / "dying.log")
        jobs_after = client.get(f"/api/rounds/{round_id}").json()["jobs"]
        assert [job["status"] for job in jobs_after] == ["succeeded", "queued", "queued", "queued"]
        assert harness.broker_messages(settings) == 0  # cues was recorded, mil never reached the broker
        with harness.celery_worker(settings, tmp_path / "worker.log"):
            finished = harness.wait_for_round(client, round_id, timeout_s=60)
    assert finished["status"] == "succeeded", harness.log_tail(tmp_path / "worker.log")
    assert [job["attempts"] for job in finished["jobs"]] == [1] * len(fake_rounds.STAGES)


@pytest.fixture
def settings(tmp_path, monkeypatch, data_root):
    monkeypatch.setattr(fake_rounds, "COMPUTED", [])
    return harness.service_settings(monkeypatch, tmp_path, data_root, max_attempts="3")


@pytest.fixture
def client(settings):
    with harness.api_client(settings) as client:
        yield client


def test_a_task_never_runs_a_stage_whose_predecessor_did_not_succeed(client, settings, monkeypatch):
    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)
    round_ = harness.start_round(client)
    cues, mil = round_["jobs"][0]["id"], round_["jobs"][1]["id"]
    # a duplicate task reaches ``mil`` while ``cues`` has not run (or failed): it must not start
    assert tasks.run_job(mil, "duplicate-chain") == jobs.BLOCKED
    with session_scope(settings.database_url) as session:
        ctx = jobs.start(session, cues, "task-1", "running on cpu", settings.job_lease_s)
        jobs.fail(session, ctx, "cues: broken")
    assert tasks.run_job(mil, "duplicate-chain") in (jobs.BLOCKED, jobs.SKIPPED)
    assert fake_rounds.COMPUTED == []
    statuses = [job["status"] for job in client.get(f"/api/rounds/{round_['id']}").json()["jobs"]]
    assert statuses == ["failed", "cancelled", "cancelled", "cancelled"]


def test_a_job_lost_max_attempts_times_fails_with_a_clear_message(client, settings, monkeypatch):
    sent = []
    monkeypatch.setattr(dispatch, "enqueue", sent.append)
    round_ = harness.start_round(client)
    cues = round_["jobs"][0]["id"]
    for attempt in range(1, settings.max_attempts + 1):
        with session_scope(settings.database_url) as session:
            assert not isinstance(jobs.start(session, cues, f"task-{attempt}", "running", settings.job_lease_s), str)
        lapse(settings, cues)  # its worker was killed (OOM) mid-stage
        recovery.recover_lost_jobs(settings)
    after = client.get(f"/api/rounds/{round_['id']}").json()
    job = after["jobs"][0]
    assert (after["status"], job["status"], job["attempts"]) == ("failed", "failed", settings.max_attempts)
    assert job["error"] == ("gave up after 3 attempts: each time its worker was lost (killed, out of memory "
                            "or its machine gone); see WSIS_MAX_ATTEMPTS")
    assert len(sent) == settings.max_attempts  # the launch and two requeues; no third
    retried = client.post(f"/api/runs/{round_['run_id']}/rounds")  # a user retry gets a fresh budget
    assert retried.status_code == 202
    with session_scope(settings.database_url) as session:
        assert session.get(Job, cues).lost_attempts == 0


def lapse(settings, job_id: int) -> None:
    with session_scope(settings.database_url) as session:
        stale = utcnow() - timedelta(seconds=settings.job_lease_s + 1)
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=stale))


def test_eager_rounds_still_run_end_to_end(client):
    celery_app.conf.task_always_eager = True
    try:
        round_ = harness.start_round(client)
    finally:
        celery_app.conf.task_always_eager = False
    assert round_["status"] == "succeeded"
    with session_scope(client.app.state.settings.database_url) as session:
        assert session.scalar(select(Round.undispatched_since).where(Round.id == round_["id"])) is None
