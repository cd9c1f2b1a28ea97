"""Overlays, the gallery and the model download of the API on rounds of the fake backend whose pseudo labels
are replaced by hand-made ones (tests/integration/review_data.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from integration import harness
from integration.review_data import add_stage_file, rect_annotation, rect_mask, replace_round_file
from services.workers import dispatch
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.data.images import load_rgb

pytestmark = pytest.mark.usefixtures("eager_tasks")

SIZE = 96  # the synthetic images' side
# image id -> [(category, (y0, y1, x0, x1), score)]; round 2 drops image 5's instance and moves image 7's
ROUND_1 = {2: [(1, (10, 50, 10, 50), 0.3)], 3: [(1, (40, 70, 10, 40), 0.9), (2, (5, 30, 50, 90), 0.8)],
           **{i: [(1, (20, 60, 20, 60), 0.95)] for i in (4, 5, 6, 7, 8)}}
ROUND_2 = {**ROUND_1, 5: [], 7: [(1, (25, 65, 25, 65), 0.95)]}
REVIEW_ORDER = [5, 1, 2, 3, 7, 4, 6, 8]  # no instance (5 lost its one: changed most), lowest score, change


@pytest.fixture
def settings(tmp_path, monkeypatch, synth_dataset):
    return harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))


@pytest.fixture
def client(settings):
    with harness.api_client(settings) as client:
        yield client


def labels_file(dataset, instances: dict) -> dict:
    images = [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in dataset.images]
    annotations = []
    for image_id, entries in sorted(instances.items()):
        for category, (y0, y1, x0, x1), score in entries:
            mask = rect_mask(SIZE, SIZE, y0, y1, x0, x1)
            annotations.append(rect_annotation(len(annotations) + 1, image_id, category, mask, score))
    categories = [{"id": k, "name": name} for k, name in enumerate(dataset.classes, start=1)]
    return {"images": images, "categories": categories, "annotations": annotations}


@pytest.fixture
def rounds(client, settings):
    """Two finished rounds of one run with the hand-made labels; returns their ids."""
    first = harness.start_round(client)
    run_id = first["run_id"]
    second = client.post(f"/api/runs/{run_id}/rounds").json()
    dataset = open_weak_dataset(settings.data_root / "synth", "train")
    for round_, instances in ((first, ROUND_1), (second, ROUND_2)):
        assert client.get(f"/api/rounds/{round_['id']}").json()["status"] == "succeeded"
        replace_round_file(settings, round_["id"], "pseudo_labels", labels_file(dataset, instances))
    return first["id"], second["id"]


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def test_an_overlay_has_the_image_size_and_differs_exactly_around_the_masks(client, settings, rounds):
    overlay = png(client.get(f"/api/rounds/{rounds[0]}/overlays/3.png"))
    original = load_rgb(open_weak_dataset(settings.data_root / "synth", "train").images[2].path)
    assert overlay.shape == original.shape == (SIZE, SIZE, 3)
    changed = np.any(overlay != original, axis=2)
    assert changed[45:65, 15:35].all() and changed[10:25, 55:85].all()  # inside both masks
    assert not changed[75:, 45:].any()  # far from every mask, box and caption
    cached = list((settings.artifact_root / "runs").rglob("overlays/pseudo-train-*/3-full.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == client.get(f"/api/rounds/{rounds[0]}/overlays/3.png").content


def test_a_thumbnail_is_scaled_to_its_longer_side_and_an_image_without_masks_is_the_image(client, settings, rounds):
    assert png(client.get(f"/api/rounds/{rounds[0]}/overlays/3.png?thumbnail=48")).shape == (48, 48, 3)
    plain = png(client.get(f"/api/rounds/{rounds[0]}/overlays/1.png"))
    assert (plain == load_rgb(open_weak_dataset(settings.data_root / "synth", "train").images[0].path)).all()


def test_overlay_errors(client, settings, rounds, monkeypatch):
    unknown = client.get(f"/api/rounds/{rounds[0]}/overlays/99.png")
    assert unknown.status_code == 404 and "image 99 not found" in unknown.json()["detail"]
    assert client.get("/api/rounds/77/overlays/1.png").status_code == 404
    assert client.get(f"/api/rounds/{rounds[0]}/overlays/1.png?thumbnail=5").status_code == 422
    next_round = client.get(f"/api/rounds/{rounds[1]}/overlays/1.png?source=predictions")
    assert next_round.status_code == 409 and "round 3" in next_round.json()["detail"]
    monkeypatch.setattr(dispatch, "enqueue", lambda _jobs: None)  # the broker holds round 3: nothing runs
    run_id = client.get(f"/api/rounds/{rounds[0]}").json()["run_id"]
    queued = client.post(f"/api/runs/{run_id}/rounds").json()
    early = client.get(f"/api/rounds/{queued['id']}/overlays/1.png")
    assert early.status_code == 409 and "pseudo_labels stage has not finished" in early.json()["detail"]
    assert client.get(f"/api/rounds/{queued['id']}/gallery").status_code == 409


def test_val_predictions_overlay_comes_from_the_evaluate_stage(client, settings, rounds):
    assert client.get(f"/api/rounds/{rounds[0]}/overlays/1.png?source=predictions&split=val").status_code == 404
    val = open_weak_dataset(settings.data_root / "synth", "val")
    prediction = rect_annotation(1, 2, 1, rect_mask(SIZE, SIZE, 30, 60, 30, 60), 0.7)
    add_stage_file(settings, rounds[0], "evaluate", "val_predictions", "val_predictions.json",
                   json.dumps([prediction]).encode())
    overlay = png(client.get(f"/api/rounds/{rounds[0]}/overlays/2.png?source=predictions&split=val"))
    changed = np.any(overlay != load_rgb(val.images[1].path), axis=2)
    assert changed[35:55, 35:55].all() and not changed[75:, :].any()


def test_gallery_pages_in_review_order(client, rounds):
    body = client.get(f"/api/rounds/{rounds[1]}/gallery?limit=3&offset=3").json()
    assert (body["total"], body["limit"], body["offset"], body["sort"]) == (8, 3, 3, "review")
    assert [item["image_id"] for item in body["items"]] == REVIEW_ORDER[3:6]
    every = client.get(f"/api/rounds/{rounds[1]}/gallery").json()["items"]
    assert [item["image_id"] for item in every] == REVIEW_ORDER
    by_id = {item["image_id"]: item for item in every}
    assert by_id[1]["instances"] == 0 and by_id[1]["min_score"] is None and by_id[1]["change"] == 0
    assert by_id[5]["change"] == 1 and by_id[4]["change"] == 0 and 0 < by_id[7]["change"] < 1
    assert by_id[3]["min_score"] == pytest.approx(0.8) and by_id[3]["mean_score"] == pytest.approx(0.85)
    assert by_id[3]["previous_overlay_url"] == f"/api/rounds/{rounds[0]}/overlays/3.png"
    assert [item["image_id"] for item in client.get(f"/api/rounds/{rounds[1]}/gallery?sort=id").json()["items"]] == \
        list(range(1, 9))


def test_gallery_counts_and_filters_by_class(client, rounds):
    first = client.get(f"/api/rounds/{rounds[0]}/gallery").json()
    names = [c["class"] for c in first["classes"]]
    assert [(c["instances"], c["images"]) for c in first["classes"]][:2] == [(7, 7), (1, 1)]
    assert first["previous_round_id"] is None and all(item["change"] is None for item in first["items"])
    filtered = client.get(f"/api/rounds/{rounds[0]}/gallery", params={"class": names[1]}).json()
    assert filtered["total"] == 1 and [item["image_id"] for item in filtered["items"]] == [3]
    unknown = client.get(f"/api/rounds/{rounds[0]}/gallery", params={"class": "unicorn"})
    assert unknown.status_code == 400 and names[0] in unknown.json()["detail"]
    for item in first["items"][:2]:  # thumbnails are at most 160 px: these 96 px images stay as they are
        assert png(client.get(item["thumbnail_url"])).shape[:2] == (item["height"], item["width"])


def test_model_download_streams_model_pt_with_its_etag(client, settings, rounds):
    missing = client.get(f"/api/rounds/{rounds[0]}/model")
    assert missing.status_code == 404 and "no is_train stage" in missing.json()["detail"]
    data = b"a checkpoint" * 1000
    add_stage_file(settings, rounds[0], "is_train", "model", "model.pt", data)
    response = client.get(f"/api/rounds/{rounds[0]}/model")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-disposition"] == 'attachment; filename="run1_round1_model.pt"'
    head = client.head(f"/api/rounds/{rounds[0]}/model")
    assert head.status_code == 200 and head.headers["etag"] == response.headers["etag"] and not head.content
    assert client.get(f"/api/rounds/{rounds[0]}/model", headers={"If-None-Match": response.headers["etag"]}).status_code == 304


def test_train_predictions_of_round_k_come_from_round_k_plus_1(client, settings, rounds):
    prediction = rect_annotation(1, 4, 2, rect_mask(SIZE, SIZE, 60, 90, 60, 90), 0.6)
    add_stage_file(settings, rounds[1], "cues", "train_predictions", "train_predictions.json",
                   json.dumps([prediction]).encode())
    overlay = png(client.get(f"/api/rounds/{rounds[0]}/overlays/4.png?source=predictions"))
    changed = np.any(overlay != load_rgb(open_weak_dataset(settings.data_root / "synth", "train").images[3].path), axis=2)
    assert changed[65:85, 65:85].all() and not changed[:40, :].any()  # the prediction, not round 1's pseudo label


def test_the_gallery_follows_a_rewritten_label_file(client, settings, rounds):
    assert client.get(f"/api/rounds/{rounds[0]}/gallery").json()["items"][0]["image_id"] == 1  # no instance
    dataset = open_weak_dataset(settings.data_root / "synth", "train")
    replace_round_file(settings, rounds[0], "pseudo_labels", labels_file(dataset, {**ROUND_1, 1: [(1, (0, 9, 0, 9), 0.99)],
                                                                                     6: []}))
    assert client.get(f"/api/rounds/{rounds[0]}/gallery").json()["items"][0]["image_id"] == 6
