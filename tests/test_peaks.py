"""PRM peak finding on synthetic response maps with known maxima, and the find_peaks stage."""

from __future__ import annotations

import torch

from wsis_core.classifier import build_classifier
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.peaks import Peak, find_peaks, local_peaks, to_image_coordinate
from wsis_core.profiles import get_profile


def _bumps(height: int, width: int, bumps: list[tuple[int, int, float]]) -> torch.Tensor:
    """A map that is the max of sharp Gaussian bumps (y, x, height)."""
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    out = torch.zeros(height, width)
    for y, x, h in bumps:
        out = torch.maximum(out, h * torch.exp(-((ys - y) ** 2 + (xs - x) ** 2) / 2.0))
    return out


def test_peaks_are_the_local_maxima_above_the_relative_threshold():
    class1 = _bumps(12, 12, [(2, 3, 1.0), (8, 9, 0.8), (9, 2, 0.3)])  # 0.3 < 0.5 * max: not a peak
    class2 = _bumps(12, 12, [(6, 6, 2.0)])
    maps = torch.stack([class1, class2])[None]
    peaks = local_peaks(maps, torch.tensor([[True, True]]), window=3, threshold=0.5)
    assert [(p.class_index, p.y, p.x) for p in peaks[0]] == [(2, 6, 6), (1, 2, 3), (1, 8, 9)]
    assert peaks[0][0].score == 2.0 and abs(peaks[0][2].score - 0.8) < 1e-6
    lower = local_peaks(maps, torch.tensor([[True, False]]), window=3, threshold=0.2)
    assert [(p.class_index, p.y, p.x) for p in lower[0]] == [(1, 2, 3), (1, 8, 9), (1, 9, 2)]


def test_absent_classes_have_no_peaks_and_images_are_independent():
    a = _bumps(8, 8, [(1, 1, 1.0)])
    b = _bumps(8, 8, [(6, 5, 1.0)])
    maps = torch.stack([torch.stack([a, b]), torch.stack([b, a])])
    peaks = local_peaks(maps, torch.tensor([[False, True], [True, False]]), window=3, threshold=0.5)
    assert peaks == [[Peak(2, 6, 5, 1.0)], [Peak(1, 6, 5, 1.0)]]
    assert local_peaks(maps, torch.zeros(2, 2, dtype=torch.bool), 3, 0.5) == [[], []]


def test_window_suppresses_close_maxima():
    maps = _bumps(9, 9, [(4, 2, 1.0), (4, 5, 0.9)])[None, None]  # 3 cells apart
    assert len(local_peaks(maps, torch.tensor([[True]]), window=3, threshold=0.1)[0]) == 2
    assert [(p.y, p.x) for p in local_peaks(maps, torch.tensor([[True]]), window=7, threshold=0.1)[0]] == [(4, 2)]


def test_global_maximum_is_always_a_peak():
    negative = torch.full((1, 1, 5, 5), -3.0)
    negative[0, 0, 3, 1] = -1.0
    assert [(p.y, p.x) for p in local_peaks(negative, torch.tensor([[True]]), 3, 0.9)[0]] == [(3, 1)]
    flat = torch.zeros(1, 1, 4, 4)
    assert len(local_peaks(flat, torch.tensor([[True]]), 3, 0.5)[0]) == 1


def test_min_score_drops_non_positive_maxima_but_keeps_each_present_class_maximum():
    maps = (_bumps(9, 9, [(1, 1, 2.0), (7, 7, 1.8)]) - 1.9)[None, None]  # responses 0.1 and -0.1
    assert len(local_peaks(maps, torch.tensor([[True]]), 3, 0.5)[0]) == 2
    assert [(p.y, p.x) for p in local_peaks(maps, torch.tensor([[True]]), 3, 0.5, min_score=0.0)[0]] == [(1, 1)]
    below = maps - 1.0  # every response negative: the global maximum still gives the class its bag
    assert [(p.y, p.x) for p in local_peaks(below, torch.tensor([[True]]), 3, 0.5, min_score=0.0)[0]] == [(1, 1)]


def test_cell_to_pixel_mapping():
    assert to_image_coordinate(0, 10, 160) == 8
    assert to_image_coordinate(9, 10, 160) == 152
    assert to_image_coordinate(3, 4, 50) == 43
    assert 0 <= to_image_coordinate(0, 4, 3) < 3


def test_find_peaks_stage_returns_pixels_of_the_present_classes(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    profile = get_profile("tiny", {"input_size": 32, "infer_batch_size": 3})
    torch.manual_seed(0)
    classifier = build_classifier(len(dataset.classes), cfg=profile.cls, backbone=profile.backbone)
    calls = []
    shared = {"cfg": profile.cls, "input_size": profile.input_size, "batch_size": profile.infer_batch_size}
    peaks = find_peaks(classifier, dataset, torch.device("cpu"), **shared, on_progress=lambda d, t: calls.append((d, t)))
    assert len(peaks) == len(dataset) and calls[-1] == (3, 3)
    for info, image_peaks in zip(dataset.images, peaks):
        assert {p["class"] for p in image_peaks} == set(info.labels)
        for p in image_peaks:
            assert set(p) == {"class", "x", "y", "score"}
            assert 0 <= p["x"] < info.width and 0 <= p["y"] < info.height
    (again,) = find_peaks(classifier, dataset, torch.device("cpu"), **shared, indices=[2])
    assert [(p["class"], p["x"], p["y"]) for p in again] == [(p["class"], p["x"], p["y"]) for p in peaks[2]]


def test_min_ratio_drops_peaks_far_below_their_class_maximum():
    # A negative trough widens the map's range, so the range threshold alone keeps the 0.3 bump (0.3 + 1 >= 0.5 *
    # (1 + 1)); the ratio to the class maximum drops it, and keeps the 0.8 bump and the maximum itself.
    class1 = _bumps(12, 12, [(2, 3, 1.0), (8, 9, 0.8), (9, 2, 0.3)]) - 2.0 * _bumps(12, 12, [(6, 6, 0.5)])
    maps = class1[None, None]
    present = torch.tensor([[True]])
    by_range = local_peaks(maps, present, window=3, threshold=0.5)
    assert (9, 2) in [(p.y, p.x) for p in by_range[0]]
    by_ratio = local_peaks(maps, present, window=3, threshold=0.5, min_ratio=0.5)
    assert [(p.y, p.x) for p in by_ratio[0]] == [(2, 3), (8, 9)]
    assert [(p.y, p.x) for p in local_peaks(maps, present, window=3, threshold=0.5, min_ratio=1.0)[0]] == [(2, 3)]
