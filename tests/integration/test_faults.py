"""Faults with real processes: a worker killed mid-stage, the API restarted mid-round, a failed stage retried.

Rounds run in a real ``celery worker`` with the fake stage backend (``integration.fake_rounds``),
whose ``hold_<stage>`` file parks a stage half-way so that a test strikes while the stage runs.
PostgreSQL and Redis as in ``harness``: skipped when unreachable, a failure under ``CI=true``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from integration import fake_rounds, harness
from services.common import store
from services.common.db import session_scope
from services.common.models import Artifact
from wsis_core.data.dataset import open_weak_dataset

LEASE_S = 3  # WSIS_JOB_LEASE_S of the kill test: the killed worker's job is queued again seconds later
HELD_STAGE = "mil"  # parked half-way by fake_rounds while a test strikes


@pytest.fixture
def live_urls():
    """PostgreSQL and Redis, for the whole test (its assertions read the database)."""
    with harness.live_service_urls() as urls:
        yield urls


@pytest.fixture(params=["embedded", "postgres+redis"])
def service_urls(request, tmp_path):
    """``make run``'s SQLite database and broker, or PostgreSQL and Redis."""
    if request.param == "embedded":
        return harness.embedded_service_urls(tmp_path)
    return request.getfixturevalue("live_urls")


@pytest.fixture
def data_root(tmp_path, synth_dataset):
    return harness.data_root_with(tmp_path, synth_dataset)


def hold(data_root: Path) -> Path:
    """Create the file that parks HELD_STAGE half-way while it exists; returns it."""
    marker = data_root / "synth" / f"hold_{HELD_STAGE}"
    marker.touch()
    return marker


def running_half_way(job: dict) -> bool:
    return job["status"] == "running" and job["progress"] >= 0.5


def by_stage(round_: dict, field: str) -> dict:
    return {job["stage"]: job[field] for job in round_["jobs"]}


def artifact_rows(settings, round_id: int) -> list[tuple[str, str, str, str]]:
    """``(stage, kind, path, sha256)`` of every row of the artifact table for the round."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(select(Artifact.stage, Artifact.kind, Artifact.path, Artifact.sha256)
                               .where(Artifact.round_id == round_id).order_by(Artifact.stage, Artifact.kind))
        return [tuple(row) for row in rows]


def assert_one_row_per_output_matching_the_disk(settings, round_id: int) -> None:
    """The artifact table holds exactly one row per output of the round, each with the sha256 of the disk now."""
    rows = artifact_rows(settings, round_id)
    assert [(stage, kind) for stage, kind, _, _ in rows] == sorted(
        (stage, kind) for stage, (kind, _) in fake_rounds.OUTPUTS.items()
    )
    for _, kind, path, sha256 in rows:
        assert store.describe(settings.artifact_root, kind, settings.artifact_root / path).sha256 == sha256, path


def test_a_worker_killed_mid_stage_is_replaced_and_the_round_finishes_once(service_urls, tmp_path, monkeypatch,
                                                                           data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, job_lease_s=str(LEASE_S), **service_urls)
    released = hold(data_root)
    logs = [tmp_path / "worker-killed.log", tmp_path / "worker-restarted.log"]
    with harness.api_client(settings) as client:
        with harness.celery_worker(settings, logs[0]) as worker:
            round_id = harness.start_round(client)["id"]
            harness.wait_for_job(client, round_id, HELD_STAGE, running_half_way)
            worker.kill()  # SIGKILL: no warm shutdown, no message to the broker or the database
            worker.wait()
        assert by_stage(client.get(f"/api/rounds/{round_id}").json(), "status")[HELD_STAGE] == "running"
        released.unlink()
        with harness.celery_worker(settings, logs[1]):
            round_ = harness.wait_for_round(client, round_id)
    assert round_["status"] == "succeeded", "\n".join(map(harness.log_tail, logs))
    assert by_stage(round_, "attempts") == {"cues": 1, "mil": 2, "pseudo_labels": 1, "evaluate": 1}
    assert_one_row_per_output_matching_the_disk(settings, round_id)


def test_restarting_the_api_mid_round_loses_nothing(live_urls, tmp_path, monkeypatch, data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, **live_urls)
    port = harness.free_port()
    released = hold(data_root)
    with harness.celery_worker(settings, tmp_path / "worker.log"):
        with harness.api_server(settings, tmp_path / "api-killed.log", port) as (api, client):
            round_ = harness.start_round(client)
            harness.wait_for_job(client, round_["id"], HELD_STAGE, running_half_way)
            api.kill()  # SIGKILL
            api.wait()
        released.unlink()
        with harness.api_server(settings, tmp_path / "api-restarted.log", port) as (_api, client):
            finished = harness.wait_for_round(client, round_["id"])
            artifacts = client.get(f"/api/rounds/{round_['id']}/artifacts").json()
            metrics = client.get(f"/api/runs/{round_['run_id']}/metrics").json()
            labels = client.get(f"/api/rounds/{round_['id']}/pseudo-labels")
    assert finished["status"] == "succeeded", harness.log_tail(tmp_path / "worker.log")
    assert set(by_stage(finished, "attempts").values()) == {1}  # the worker never noticed
    assert sorted((a["stage"], a["kind"], a["path"], a["sha256"]) for a in artifacts) == artifact_rows(
        settings, round_["id"])
    assert_one_row_per_output_matching_the_disk(settings, round_["id"])
    assert [(row["round"], row["split"]) for row in metrics] == [(1, "val")]
    assert {name: metrics[0][name] for name in fake_rounds.METRICS} == fake_rounds.METRICS
    sha256 = {artifact["kind"]: artifact["sha256"] for artifact in artifacts}
    assert labels.status_code == 200 and labels.headers["etag"] == f'"{sha256["pseudo_labels"]}"'


def test_a_corrupt_image_fails_its_stage_readably_and_a_retry_resumes_there(live_urls, tmp_path, monkeypatch,
                                                                           data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, **live_urls)
    image = open_weak_dataset(data_root / "synth", "train").images[0].path
    original = image.read_bytes()
    image.write_bytes(original[: len(original) // 2])  # the header still reads; the pixels do not
    with harness.api_client(settings) as client, harness.celery_worker(settings, tmp_path / "worker.log"):
        failed = harness.wait_for_round(client, harness.start_round(client)["id"])
        image.write_bytes(original)
        retried = client.post(f"/api/runs/{failed['run_id']}/rounds")
        assert retried.status_code == 202, retried.text
        finished = harness.wait_for_round(client, retried.json()["id"])
    assert failed["status"] == "failed"
    assert by_stage(failed, "status") == {"cues": "succeeded", "mil": "failed", "pseudo_labels": "cancelled",
                                          "evaluate": "cancelled"}
    shown = f"$WSIS_DATA_ROOT/{image.resolve().relative_to(settings.data_root)}"  # no server path in job errors
    assert by_stage(failed, "error")["mil"].startswith(f"{shown}: corrupt or unreadable image (")
    assert (finished["id"], finished["status"]) == (failed["id"], "succeeded"), harness.log_tail(
        tmp_path / "worker.log")
    assert by_stage(finished, "attempts") == {"cues": 1, "mil": 2, "pseudo_labels": 1, "evaluate": 1}
    for field in ("started_at", "finished_at"):  # the finished stage was kept, not run again
        assert by_stage(finished, field)["cues"] == by_stage(failed, field)["cues"]
    assert_one_row_per_output_matching_the_disk(settings, failed["id"])
