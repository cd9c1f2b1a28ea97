"""Backbone weights come from WSIS_WEIGHTS_ROOT only, are checked by sha256 where given, and their errors give
nothing away about other files (issue 19, item 8)."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

from integration import fake_rounds, harness
from services.workers.celery_app import app as celery_app
from wsis_core.backbone import build_backbone
from wsis_core.errors import WsisInputError
from wsis_core.profiles import get_profile


@pytest.fixture
def weights_root(tmp_path):
    root = tmp_path / "weights"
    root.mkdir()
    (root / "r18.pt").write_bytes(b"placeholder")  # the fake stages never load it
    return root


@pytest.fixture
def client(tmp_path, monkeypatch, synth_dataset, weights_root):
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset),
                                        weights_root=str(weights_root))
    celery_app.conf.task_always_eager = True
    try:
        with harness.api_client(settings) as client:
            assert client.post("/api/datasets", json={"name": "synth", "path": "synth"}).status_code == 201
            yield client
    finally:
        celery_app.conf.task_always_eager = False


def create_run(client, weights: str):
    return client.post("/api/runs", json={"dataset_id": 1, "config": {"overrides": {"backbone.weights": weights}}})


@pytest.mark.parametrize(("weights", "expected"), [
    ("/etc/passwd", "outside WSIS_WEIGHTS_ROOT"), ("../../../../etc/passwd", "outside WSIS_WEIGHTS_ROOT"),
    ("missing.pt", "not found in WSIS_WEIGHTS_ROOT"),
])
def test_weights_outside_the_weights_root_or_missing_are_400(client, weights, expected):
    response = create_run(client, weights)
    assert response.status_code == 400 and expected in response.json()["detail"], response.text


def test_the_worker_resolves_weights_inside_the_root_and_checks_again(client, weights_root, tmp_path, monkeypatch):
    seen = []
    real = fake_rounds.run_stage

    def recording(stage, **kwargs):
        seen.append(kwargs["config"]["overrides"]["backbone.weights"])
        return real(stage, **kwargs)

    monkeypatch.setattr(fake_rounds, "run_stage", recording)
    first, second = (create_run(client, "r18.pt") for _ in range(2))
    assert first.status_code == second.status_code == 201, first.text
    assert client.post(f"/api/runs/{first.json()['id']}/rounds").json()["status"] == "succeeded"
    assert set(seen) == {str(weights_root.resolve() / "r18.pt")}
    (weights_root / "r18.pt").unlink()
    (weights_root / "r18.pt").symlink_to(tmp_path / "wsis.sqlite")  # points out of the folder since the run began
    failed = client.post(f"/api/runs/{second.json()['id']}/rounds").json()
    assert failed["status"] == "failed"
    assert failed["jobs"][0]["error"] == "backbone_weights 'r18.pt': outside WSIS_WEIGHTS_ROOT"


def test_sha256_is_checked_where_given(tmp_path):
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    build_backbone("resnet18", 32, path, weights_sha256=digest)
    with pytest.raises(WsisInputError, match="sha256"):
        build_backbone("resnet18", 32, path, weights_sha256="0" * 64)
    with pytest.raises(WsisInputError, match="backbone.weights_sha256"):
        get_profile("tiny", {"backbone.weights_sha256": "not-hex"})


def test_a_file_that_is_no_state_dict_does_not_show_its_bytes(tmp_path):
    path = tmp_path / "text.pt"
    path.write_text("Top secret\n")
    with pytest.raises(WsisInputError) as err:
        build_backbone("resnet18", 32, path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a torch state_dict file (") and "'T'" not in message
    assert "Top" not in message and "84" not in message
