"""Proposal sources: MCG .mat / .npz / .json loaders, the selective search cache and its stage function."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.io

from wsis_core.data.dataset import open_weak_dataset
from wsis_core.errors import WsisInputError
from wsis_core.proposals import (
    PrecomputedProposals,
    ProposalStore,
    SelectiveSearchOptions,
    StraddlingProposals,
    compute_proposals,
    load_mcg_mat,
    rank_objectness,
    selective_search,
    straddling_objectness,
    superpixels,
)

XYXY = np.array([[0, 1, 10, 20], [4.5, 5, 8, 9]], np.float32)
SCORES = np.array([0.9, 0.4], np.float32)


def test_mcg_mat_boxes_are_converted_to_zero_based_xyxy(tmp_path):
    # MATLAB [y1, x1, y2, x2], 1-based inclusive: rows 2..20 and columns 1..10 -> (0, 1, 10, 20).
    matlab_boxes = np.array([[2, 1, 20, 10], [6, 6, 9, 8]], np.uint16)
    scipy.io.savemat(tmp_path / "a.mat", {"boxes": matlab_boxes, "scores": SCORES[:, None]})
    boxes, scores = load_mcg_mat(tmp_path / "a.mat")
    np.testing.assert_array_equal(boxes, [[0, 1, 10, 20], [5, 5, 8, 9]])
    np.testing.assert_array_equal(scores, SCORES)
    assert boxes.dtype == scores.dtype == np.float32
    scipy.io.savemat(tmp_path / "b.mat", {"bboxes": np.array([[2, 1, 20, 10]]), "scores": [[0.5]]})
    np.testing.assert_array_equal(load_mcg_mat(tmp_path / "b.mat")[0], [[0, 1, 10, 20]])


def test_precomputed_npz_json_by_file_stem_and_errors(tmp_path):
    np.savez(tmp_path / "2007_000001.npz", boxes=XYXY, scores=SCORES)
    (tmp_path / "2007_000002.json").write_text(json.dumps({"boxes": XYXY.tolist(), "scores": SCORES.tolist()}))
    np.savez(tmp_path / "2007_000003.npz", boxes=XYXY[:, :3], scores=SCORES)
    source = PrecomputedProposals(tmp_path, {1: "2007_000001", 2: "2007_000002", 3: "2007_000003", 4: "2007_000004"})
    for image_id in (1, 2):
        boxes, scores = source.proposals_for(image_id)
        np.testing.assert_array_equal(boxes, XYXY)
        np.testing.assert_array_equal(scores, SCORES)
    with pytest.raises(WsisInputError, match=r"2007_000003\.npz: expected boxes \[N, 4\]"):
        source.proposals_for(3)
    with pytest.raises(WsisInputError, match="2007_000004"):
        source.proposals_for(4)
    (tmp_path / "2007_000002.mat").write_bytes(b"not a mat file")
    with pytest.raises(WsisInputError, match="2007_000002.mat"):  # .mat takes precedence and is reported
        source.proposals_for(2)


def test_store_round_trip_and_missing_image(tmp_path):
    store = ProposalStore(tmp_path / "cache")
    store.save(5, XYXY, SCORES)
    assert store.has(5) and not store.has(6)
    boxes, scores = store.proposals_for(5)
    np.testing.assert_array_equal(boxes, XYXY)
    np.testing.assert_array_equal(scores, SCORES)
    np.testing.assert_array_equal(PrecomputedProposals(tmp_path / "cache", {5: "5"}).proposals_for(5)[1], SCORES)
    with pytest.raises(WsisInputError, match="compute_proposals"):
        store.proposals_for(6)


def test_selective_search_boxes_and_rank_objectness():
    rng = np.random.default_rng(0)
    image = np.full((48, 64, 3), 30, np.uint8)
    image[10:30, 8:30] = (200, 40, 40)
    image[20:44, 36:60] = (40, 200, 90)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    boxes, objectness = selective_search(image, SelectiveSearchOptions(max_proposals=25, min_size=6))
    assert 0 < len(boxes) <= 25 and boxes.dtype == np.float32
    assert np.all(boxes[:, 2:] - boxes[:, :2] >= 6)
    assert np.all(boxes >= 0) and np.all(boxes[:, [2, 3]] <= [64, 48])
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    np.testing.assert_allclose(objectness, rank_objectness(len(boxes)))
    np.testing.assert_allclose(rank_objectness(4), [1.0, 0.75, 0.5, 0.25])


def test_compute_proposals_with_a_pool_then_resumes(synth_dataset, tmp_path):
    dataset = open_weak_dataset(synth_dataset, "train")
    total = len(dataset.images)
    calls = []
    store = compute_proposals(dataset, tmp_path, workers=2, on_progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(store.has(info.id) and len(store.proposals_for(info.id)[0]) > 0 for info in dataset.images)

    os.remove(store.path_for(dataset.images[1].id))
    calls.clear()
    compute_proposals(dataset, tmp_path, workers=2, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(total - 1, total), (total, total)]
    assert store.has(dataset.images[1].id)


def _two_objects() -> np.ndarray:
    """A flat grey image with a red and a green rectangle that touch: three uniform regions."""
    image = np.full((60, 80, 3), 90, np.uint8)
    image[10:40, 10:40] = (220, 30, 30)
    image[15:50, 40:70] = (30, 200, 60)
    return image


def test_superpixels_follow_uniform_regions():
    labels = superpixels(_two_objects(), scale=100.0)
    assert labels.shape == (60, 80) and labels.dtype == np.int32
    # each object's inside is one region (the smoothed edges make thin regions of their own)
    assert len(np.unique(labels[13:37, 13:37])) == 1 and len(np.unique(labels[18:47, 43:67])) == 1
    assert len({labels[20, 20], labels[30, 50], labels[5, 5]}) == 3


def test_straddling_prefers_the_box_that_hugs_an_object():
    # Alexe et al. 2012, Eq. 5: SS = 1 - sum_s min(|s - B|, |s & B|) / |B|.
    boxes = np.array([
        [10, 10, 40, 40],  # the red object exactly: cuts only background, which lies mostly outside
        [10, 10, 25, 40],  # half of it: cuts the red region in two
        [10, 10, 70, 50],  # both objects and some background
        [0, 0, 80, 60],  # the whole image cuts nothing
        [5, 5, 5.2, 30],  # no whole pixel: no objectness
    ], np.float32)
    scores = straddling_objectness(_two_objects(), boxes, scale=100.0)
    assert scores.dtype == np.float32 and scores.shape == (5,) and scores[4] == 0.0
    assert scores[3] == 1.0 and scores[0] > 0.99  # only the thin edge regions stick out of the exact box
    assert scores[1] < 0.1  # half the red region is outside a box of half its size
    assert scores[1] < scores[2] < scores[0]


def test_straddling_in_chunks_matches_one_table(monkeypatch):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    boxes = np.sort(rng.uniform(0, 40, (30, 2, 2)), axis=1).reshape(30, 4)[:, [0, 2, 1, 3]]
    whole = straddling_objectness(image, boxes, scale=50.0)
    monkeypatch.setattr("wsis_core.proposals.STRADDLING_CHUNK", 3)
    np.testing.assert_allclose(straddling_objectness(image, boxes, scale=50.0), whole, rtol=1e-6)


def test_straddling_proposals_replace_the_score_and_keep_the_boxes(tmp_path):
    store = ProposalStore(tmp_path)
    boxes = np.array([[10, 10, 40, 40], [10, 10, 25, 40]], np.float32)
    store.save(3, boxes, np.array([0.1, 0.9], np.float32))
    source = StraddlingProposals(store, {3: _two_objects()}.__getitem__, scale=100.0)
    got_boxes, objectness = source.proposals_for(3)
    np.testing.assert_array_equal(got_boxes, boxes)
    np.testing.assert_allclose(objectness, straddling_objectness(_two_objects(), boxes, 100.0))
    assert objectness[0] > objectness[1]
