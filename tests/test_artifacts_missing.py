"""Downloads answer HEAD and ``If-None-Match: *``; an artifact deleted from the store is listed as missing and the
next launch rebuilds it (issue 19, item 11)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from integration import fake_rounds, harness
from services.workers.celery_app import app as celery_app
from wsis_core import stages
from wsis_core.round_context import RoundContext, RunConfig
from wsis_core.rounds import run_stage_in


@pytest.fixture
def data_root(tmp_path, synth_dataset):
    return harness.data_root_with(tmp_path, synth_dataset)


@pytest.fixture
def settings(tmp_path, monkeypatch, data_root):
    monkeypatch.setattr(fake_rounds, "COMPUTED", [])
    # no read cache: the tests change the store behind the API's back and read again at once
    return harness.service_settings(monkeypatch, tmp_path, data_root, read_cache_ms="0")


@pytest.fixture
def client(settings):
    celery_app.conf.task_always_eager = True
    try:
        with harness.api_client(settings) as client:
            yield client
    finally:
        celery_app.conf.task_always_eager = False


def test_head_and_if_none_match_star_on_the_download(client):
    round_id = harness.start_round(client)["id"]
    url = f"/api/rounds/{round_id}/pseudo-labels"
    body = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == body.headers["etag"] == f'"{hashlib.sha256(body.content).hexdigest()}"'
    assert client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    assert client.head("/api/rounds/999/pseudo-labels").status_code == 404


def missing_by_kind(client, round_id: int) -> dict[str, bool]:
    artifacts = client.get(f"/api/rounds/{round_id}/artifacts").json()
    return {artifact["kind"]: artifact["missing"] for artifact in artifacts}


def test_a_deleted_artifact_is_listed_missing_and_the_next_launch_rebuilds_it(client, settings):
    round_ = harness.start_round(client)
    assert set(missing_by_kind(client, round_["id"]).values()) == {False}
    boxes = settings.artifact_root / f"runs/{round_['run_id']}/round_1/mil_boxes.json"
    boxes.unlink()
    assert missing_by_kind(client, round_["id"])["mil_boxes"] is True
    rebuilt = client.post(f"/api/runs/{round_['run_id']}/rounds")
    assert rebuilt.status_code == 202, rebuilt.text
    assert (rebuilt.json()["id"], rebuilt.json()["number"], rebuilt.json()["status"]) == (round_["id"], 1, "succeeded")
    assert boxes.is_file() and set(missing_by_kind(client, round_["id"]).values()) == {False}
    assert [stage for stage, _ in fake_rounds.COMPUTED] == [*fake_rounds.STAGES, "mil"]  # only what was missing
    assert client.post(f"/api/runs/{round_['run_id']}/rounds").json()["number"] == 2  # then the next round


def test_a_retry_after_an_earlier_round_lost_an_artifact_rebuilds_that_round_first(client, settings, data_root):
    first = harness.start_round(client)
    (data_root / "synth" / "fail_evaluate").touch()
    second = client.post(f"/api/runs/{first['run_id']}/rounds").json()
    assert (second["number"], second["status"]) == (2, "failed")
    shutil.rmtree(settings.artifact_root / f"runs/{first['run_id']}/round_1/score_maps")
    (data_root / "synth" / "fail_evaluate").unlink()
    retried = client.post(f"/api/runs/{first['run_id']}/rounds")
    assert retried.status_code == 202 and retried.json()["id"] == second["id"]
    assert client.get(f"/api/rounds/{first['id']}").json()["status"] == "succeeded"
    assert client.get(f"/api/rounds/{second['id']}").json()["status"] == "succeeded"
    assert set(missing_by_kind(client, first["id"]).values()) == {False}


def test_a_stage_whose_marker_outlived_its_artifacts_runs_again(synth_dataset, tmp_path, monkeypatch):
    calls = []

    def fake_stage(ctx, _on_progress):
        calls.append(ctx.number)
        return {"pseudo_labels": ctx.work.write_json("pseudo_labels.json", {"calls": len(calls)})}

    monkeypatch.setitem(stages.STAGES, "pseudo_labels", fake_stage)
    config = RunConfig(data=str(synth_dataset), classes=("a",))
    ctx = RoundContext(tmp_path / "run", 1, config, torch.device("cpu"))
    first = run_stage_in(ctx, "pseudo_labels")
    assert run_stage_in(ctx, "pseudo_labels") == first and calls == [1]  # done: not run again
    first["pseudo_labels"].unlink()
    assert run_stage_in(ctx, "pseudo_labels")["pseudo_labels"].is_file() and calls == [1, 1]
