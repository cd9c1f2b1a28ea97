"""Bags: Eq. 4 ranking against a brute-force sum, peak membership, fallbacks, IoU bags, stage function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsis_core.bags import bags_for_peaks, bags_from_boxes, build_bags, build_bags_from_boxes, rank_scores
from wsis_core.profiles import MilConfig


def test_eq4_matches_brute_force_sum():
    rng = np.random.default_rng(0)
    height, width = 20, 24
    fg = rng.random((height, width))
    x1, y1 = rng.integers(0, width - 1, 50), rng.integers(0, height - 1, 50)
    x2, y2 = rng.integers(x1 + 1, width + 1), rng.integers(y1 + 1, height + 1)
    boxes = np.stack((x1, y1, x2, y2), axis=1).astype(np.float32)
    objectness = rng.random(50).astype(np.float32)
    expected = [
        s - 0.1 * (1 - fg[b:d, a:c]).sum() / ((c - a) * (d - b))
        for (a, b, c, d), s in zip(boxes.astype(int), objectness)
    ]
    scores = rank_scores(boxes, objectness, fg[None])
    np.testing.assert_allclose(scores[0].numpy(), expected, rtol=0, atol=1e-6)
    # Fractional boxes: a half-covered pixel counts half, i.e. the same as integer boxes on a 2x upsampled map.
    upsampled = fg.repeat(2, axis=0).repeat(2, axis=1)
    half = boxes / 2 + 0.5
    np.testing.assert_allclose(
        rank_scores(half, objectness, fg[None])[0].numpy(),
        rank_scores(half * 2, objectness, upsampled[None])[0].numpy(),
        atol=1e-6,
    )


def test_eq4_lambda_and_all_background():
    boxes = np.array([[0, 0, 4, 4]], np.float32)
    assert rank_scores(boxes, [0.8], np.zeros((1, 8, 8)), lam=0.5).item() == pytest.approx(0.3)
    assert rank_scores(boxes, [0.8], np.ones((1, 8, 8))).item() == pytest.approx(0.8)


PEAKS = [{"class": 1, "x": 5.0, "y": 5.0, "score": 0.9}, {"class": 3, "x": 15.0, "y": 5.0, "score": 0.7}]
BOXES = np.array(
    [
        [0, 0, 10, 10],  # 0: peak 1 only, all foreground
        [10, 0, 20, 10],  # 1: peak 2 only
        [0, 0, 20, 10],  # 2: both peaks
        [0, 12, 20, 20],  # 3: no peak
        [4, 4, 6, 6],  # 4: peak 1 only, half background on the class-1 map
        [5, 5, 9, 9],  # 5: peak 1 on its corner (closed box)
    ],
    np.float32,
)
OBJECTNESS = np.array([0.5, 0.5, 0.9, 0.9, 0.5, 0.2], np.float32)


def class_maps():
    maps = np.zeros((4, 20, 20), np.float32)  # [C+1, H, W], classes 1..3
    maps[1, :10, :10] = 1.0
    maps[1, 4:6, 4] = 0.0  # box 4 is half background for class 1
    maps[3, :10, 10:] = 1.0
    return maps


def test_bag_per_peak_holds_proposals_with_only_that_peak_ranked_by_eq4():
    bags = bags_for_peaks(7, PEAKS, class_maps(), BOXES, OBJECTNESS)
    assert [(bag.image_id, bag.label, bag.source, bag.exclusive) for bag in bags] == [
        (7, 1, (5.0, 5.0), True),
        (7, 3, (15.0, 5.0), True),
    ]
    # R: box 0 = 0.5, box 4 = 0.5 - 0.1 * 0.5 = 0.45, box 5 = 0.2 (all foreground)
    assert bags[0].proposal_indices.tolist() == [0, 4, 5]
    assert bags[1].proposal_indices.tolist() == [1]
    assert bags[0].proposal_indices.dtype == torch.long


def test_class_maps_as_dict_and_top_k():
    maps = class_maps()
    as_dict = bags_for_peaks(7, PEAKS, {1: maps[1], 3: maps[3]}, BOXES, OBJECTNESS, top_k=2)
    assert [bag.proposal_indices.tolist() for bag in as_dict] == [[0, 4], [1]]


def test_shared_proposals_fallback_and_dropped_peaks():
    peaks = [{"class": 1, "x": 2.0, "y": 2.0}, {"class": 1, "x": 3.0, "y": 3.0}, {"class": 1, "x": 50.0, "y": 50.0}]
    boxes = np.array([[0, 0, 10, 10], [1, 1, 5, 5]], np.float32)
    calls = []

    class Source:
        def proposals_for(self, image_id):
            return boxes, np.array([0.3, 0.6], np.float32)

    result = build_bags(
        [1, 2], {1: peaks, 2: []}, {1: class_maps()}, Source(), on_progress=lambda *args: calls.append(args)
    )
    bags = result.bags_by_image[1]
    assert result.bags_by_image[2] == []
    assert [(bag.exclusive, bag.proposal_indices.tolist()) for bag in bags] == [(False, [1, 0]), (False, [1, 0])]
    assert (result.num_peaks, result.num_relaxed, result.num_dropped) == (3, 2, 1)
    assert calls == [(1, 2), (2, 2)]


def test_bags_from_predicted_boxes_take_top_iou_proposals():
    proposals = np.array([[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30], [1, 1, 10, 10], [0, 0, 20, 20]], np.float32)
    bags = bags_from_boxes(4, [[0, 0, 10, 10], [20, 20, 31, 31]], [2, 5], proposals, top_k=3)
    assert [(bag.label, bag.source) for bag in bags] == [(2, (0.0, 0.0, 10.0, 10.0)), (5, (20.0, 20.0, 31.0, 31.0))]
    assert bags[0].proposal_indices.tolist() == [0, 1, 3]
    assert bags[1].proposal_indices.tolist()[0] == 2

    class Source:
        def proposals_for(self, image_id):
            return proposals, np.ones(len(proposals), np.float32)

    staged = build_bags_from_boxes({4: ([[0, 0, 10, 10]], [2])}, Source(), cfg=MilConfig(top_k=2))
    assert staged[4][0].proposal_indices.tolist() == [0, 1]
