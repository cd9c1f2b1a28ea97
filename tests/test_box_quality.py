"""bench/box_quality.py's score maps for the CCGR diagnostic: what a perfect SS branch could give at its
output resolution, and the hard (one-hot) maps."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import box_quality  # noqa: E402


def _label() -> np.ndarray:
    label = np.zeros((40, 40), np.int64)
    label[4:20, 4:20] = 1
    label[20:36, 16:36] = 2
    return label


def test_one_hot_has_a_channel_per_class_and_background():
    maps = box_quality.one_hot(_label(), num_classes=3)
    assert maps.shape == (4, 40, 40) and maps.dtype == np.float32
    assert np.array_equal(maps.argmax(axis=0), _label())
    assert np.array_equal(maps.sum(axis=0), np.ones((40, 40), np.float32))
    assert not maps[3].any()


def test_ss_resolution_keeps_interiors_and_blurs_borders():
    aligned = np.zeros((40, 40), np.int64)
    aligned[8:32, 8:32] = 1  # exactly 3 x 3 cells of 8 px (stride 8 on 40 px)
    maps = box_quality.ss_resolution(aligned, num_classes=1, cells=5)
    assert maps.shape == (2, 40, 40)
    assert np.allclose(maps.sum(axis=0), 1, atol=1e-5)  # still a distribution over background + classes
    assert maps[1, 12:28, 12:28].min() > 0.999 and maps[1, :4].max() < 1e-6
    assert 0.2 < maps[1, 20, 8] < 0.8  # soft at the border
    label = _label()  # edges off the cell grid: only pixels near the borders change class
    disagree = box_quality.ss_resolution(label, num_classes=2, cells=5).argmax(axis=0) != label
    assert 0 < disagree.mean() < 0.25


def test_every_variant_is_described():
    assert set(box_quality.SCORE_MAP_VARIANTS) == {"ss_hard", "oracle_coarse", "oracle_s"}
    ss = box_quality.one_hot(_label(), 2)
    for description, make in box_quality.SCORE_MAP_VARIANTS.values():
        assert description
        assert make(ss, _label(), 2, 5).shape == (3, 40, 40)
