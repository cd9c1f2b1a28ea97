"""Tests of wsis_core.ccgr: Phi of Eq. 2 on the integral image, the Eq. 3 loss, and box refinement."""

from __future__ import annotations

import pytest
import torch

from wsis_core.ccgr import CCGRResult, box_area, box_sum, ccgr_loss, ccgr_refine, ccgr_refine_with_trace, integral_image

OBJECT = (16.0, 20.0, 48.0, 44.0)  # x1, y1, x2, y2 of the synthetic object on a 64x64 map


def rectangle_map(boxes, size=64, blur=False) -> torch.Tensor:
    """[1, size, size] map: score 1 on the pixels covered by the integer boxes, 0 elsewhere."""
    score = torch.zeros(1, size, size)
    for x1, y1, x2, y2 in boxes:
        score[0, int(y1) : int(y2), int(x1) : int(x2)] = 1.0
    if blur:
        score = torch.nn.functional.avg_pool2d(score[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    return score


def graded_map(size=64) -> torch.Tensor:
    """[1, size, size] map: OBJECT with scores falling from 1 at its centre to 0.5 at its border."""
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    x1, y1, x2, y2 = OBJECT
    inside = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    radius = ((xx - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((yy - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2
    return torch.where(inside, 1 - 0.5 * radius.clamp(max=1), torch.zeros(())).unsqueeze(0)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    lt, rb = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def coverage_sum(score: torch.Tensor, box) -> torch.Tensor:
    """Brute-force reference: sum of pixel scores weighted by the area of each pixel the box covers."""
    x1, y1, x2, y2 = box
    h, w = score.shape
    cols = torch.arange(w, dtype=score.dtype)
    rows = torch.arange(h, dtype=score.dtype)
    wx = (torch.clamp(cols + 1, max=x2) - torch.clamp(cols, min=x1)).clamp(min=0)
    wy = (torch.clamp(rows + 1, max=y2) - torch.clamp(rows, min=y1)).clamp(min=0)
    return (score * wy[:, None] * wx[None, :]).sum()


# --- Phi (Eq. 2) on the integral image ------------------------------------------------------------


def test_box_sum_is_exact_at_integer_corners():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 12, 15, generator=gen, dtype=torch.float64)
    sat = integral_image(maps)
    assert sat.shape == (3, 13, 16)
    xs = torch.randint(0, 16, (40, 2), generator=gen).sort(dim=1).values
    ys = torch.randint(0, 13, (40, 2), generator=gen).sort(dim=1).values
    keep = (xs[:, 1] > xs[:, 0]) & (ys[:, 1] > ys[:, 0])
    boxes = torch.stack((xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]), dim=1)[keep].double()
    map_idx = torch.randint(0, 3, (len(boxes),), generator=gen)
    got = box_sum(sat, map_idx, boxes)
    for k, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        expected = maps[map_idx[k], y1:y2, x1:x2].sum()
        assert torch.allclose(got[k], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "box",
    [
        (2.0, 3.0, 7.4, 9.0),  # one fractional coordinate: column 7 counts with weight 0.4
        (2.25, 3.0, 7.0, 9.0),
        (2.0, 3.0, 7.0, 8.7),
        (1.3, 2.6, 9.85, 10.2),  # all four fractional: bilinear sampling of the table is still exact
        (0.0, 0.5, 14.5, 11.99),
    ],
)
def test_box_sum_at_fractional_corners_matches_area_weighted_pixels(box):
    """Bilinear sampling of the summed-area table is the exact integral of the piecewise-constant map.

    Inside one cell the table I(x, y) = I00 + u*A + v*B + u*v*S[i, j] is bilinear in the cell
    offsets (u, v), so the box sum equals the sum of pixel scores weighted by their covered area for
    any fractional corners, not only when a single coordinate is fractional.
    """
    maps = torch.rand(2, 12, 15, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = box_sum(integral_image(maps), torch.tensor([1]), torch.tensor([box], dtype=torch.float64))
    assert torch.allclose(got[0], coverage_sum(maps[1], box), rtol=0, atol=1e-12)


@pytest.mark.parametrize("gap", ["ring", "paper"])
def test_loss_gradcheck_at_fractional_coordinates(gap):
    gen = torch.Generator().manual_seed(2)
    maps = torch.rand(2, 20, 24, generator=gen, dtype=torch.float64)
    sat = integral_image(maps)
    boxes = torch.tensor(
        [
            [3.37, 4.21, 11.73, 12.58],  # context inside the map
            [0.61, 1.13, 9.29, 7.47],  # context clipped at the top-left border
            [12.44, 9.62, 23.18, 19.71],  # context clipped at the bottom-right border
        ],
        dtype=torch.float64,
    )
    lo, hi = boxes[:, :2], boxes[:, 2:]
    context_corners = torch.cat((1.25 * lo - 0.25 * hi, 1.25 * hi - 0.25 * lo), dim=1)
    for coords in (boxes, context_corners):  # all corners away from the kinks at integers
        assert float((coords - coords.round()).abs().min()) > 0.01
    boxes.requires_grad_(True)
    map_idx = torch.tensor([0, 1, 0])
    assert torch.autograd.gradcheck(lambda b: ccgr_loss(sat, b, map_idx, 1.5, gap), (boxes,))


# --- refinement ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blur", [False, True])
@pytest.mark.parametrize(
    "start",
    [
        (18.0, 22.0, 30.0, 34.0),  # small part of the object; its context reaches the object's top-left border
        (10.0, 10.0, 56.0, 56.0),  # far too large
    ],
)
def test_ring_mode_refines_to_the_object(start, blur):
    score = rectangle_map([OBJECT], blur=blur)
    refined = ccgr_refine(score, torch.tensor([start]), torch.tensor([0]))
    assert iou(refined[0], torch.tensor(OBJECT)) >= 0.85


@pytest.mark.parametrize("start", [(18.0, 22.0, 30.0, 34.0), (10.0, 10.0, 56.0, 56.0)])
def test_paper_mode_refines_to_a_flat_object(start):
    refined = ccgr_refine(rectangle_map([OBJECT]), torch.tensor([start]), torch.tensor([0]), gap="paper")
    assert iou(refined[0], torch.tensor(OBJECT)) >= 0.85


def test_paper_mode_shrinks_onto_the_core_of_a_graded_object():
    """Eq. 3 as printed, Phi(C) = Phi(B~) - Phi(B), does not converge to a graded object.

    For an unclipped context Phi(B~) = Phi(B) / s^2 + (1 - 1/s^2) Phi(ring), so the printed loss is
    -(2 - 1/s^2) Phi(B) + (1 - 1/s^2) Phi(ring) = -1.56 Phi(B) + 0.56 Phi(ring) for s = 1.5: the
    context weighs 0.36 of the centre. Where scores fall from the object's core to its border, the
    box gains more by shrinking onto the core (higher Phi(B)) than it loses on the context, the very
    "small boxes" failure the paper's text warns about. The ring mode (weights 1 and 1) recovers
    the object from the same start.
    """
    score = graded_map()
    start = torch.tensor([[26.0, 27.0, 38.0, 37.0]])
    ring = ccgr_refine(score, start, torch.tensor([0]), gap="ring")[0]
    paper = ccgr_refine(score, start, torch.tensor([0]), gap="paper")[0]
    target = torch.tensor(OBJECT)
    assert iou(ring, target) >= 0.85
    assert iou(paper, target) < 0.5
    assert bool((paper[:2] >= target[:2]).all() and (paper[2:] <= target[2:]).all())  # inside the object
    assert paper[0] < 32 < paper[2] and paper[1] < 32 < paper[3]  # around the core
    sat = integral_image(score)
    phi = lambda box: box_sum(sat, torch.tensor([0]), box[None].double()) / box_area(box)  # noqa: E731  mean of S
    assert phi(paper) > phi(ring)


def test_outward_moves_grow_a_part_box_to_the_object_and_never_shrink_it():
    """A box on the part where S is strongest: free moves shrink it onto the part (Eq. 3's gap there, 0.5,
    is close to the whole object's, 0.54, and the gradient from the start points inwards); outward moves keep
    every side at least where it started, and on a flat object grow a part box whose context reaches the
    object's border to the object."""
    score = 0.5 * rectangle_map([OBJECT])
    part = (22.0, 26.0, 30.0, 34.0)
    score[0, 26:34, 22:30] = 1.0
    start = torch.tensor([[20.0, 24.0, 32.0, 36.0]])
    free = ccgr_refine(score, start, torch.tensor([0]))[0]
    outward = ccgr_refine(score, start, torch.tensor([0]), moves="outward")[0]
    assert iou(free, torch.tensor(part)) >= 0.9
    assert bool((outward[:2] <= start[0, :2]).all() and (outward[2:] >= start[0, 2:]).all())
    part_box = torch.tensor([[18.0, 22.0, 30.0, 34.0]])
    grown = ccgr_refine(rectangle_map([OBJECT]), part_box, torch.tensor([0]), moves="outward")[0]
    assert iou(grown, torch.tensor(OBJECT)) >= 0.85


def test_box_on_a_flat_plateau_does_not_move():
    """The whole context inside a flat region: Eq. 3 is locally constant, the gradient exactly 0."""
    start = torch.tensor([[28.0, 28.0, 36.0, 36.0]])
    for gap in ("ring", "paper"):
        assert torch.equal(ccgr_refine(rectangle_map([OBJECT]), start, torch.tensor([0]), gap=gap, iters=50), start)


def test_peak_rule_keeps_touching_objects_apart():
    left, right = (10.0, 20.0, 30.0, 44.0), (30.0, 20.0, 54.0, 44.0)
    score = rectangle_map([left, right])
    peaks = torch.tensor([[20.0, 32.0], [42.0, 32.0]])
    starts = torch.tensor([[12.0, 22.0, 40.0, 42.0], [24.0, 22.0, 52.0, 42.0], [14.0, 24.0, 30.0, 40.0]])
    map_idx = torch.zeros(3, dtype=torch.long)

    def peaks_inside(boxes):
        px, py = peaks[:, 0], peaks[:, 1]
        return ((px >= boxes[:, :1]) & (px <= boxes[:, 2:3]) & (py >= boxes[:, 1:2]) & (py <= boxes[:, 3:])).sum(1)

    assert peaks_inside(starts).tolist() == [1, 1, 1]
    free = ccgr_refine(score, starts, map_idx)
    assert peaks_inside(free)[:2].tolist() == [2, 2]  # without the rule the two objects merge
    result = ccgr_refine_with_trace(score, starts, map_idx, peaks=peaks, peak_map_idx=torch.zeros(2, dtype=torch.long))
    assert peaks_inside(result.boxes).tolist() == [1, 1, 1]
    assert result.stopped.tolist() == [True, True, False]


def test_peaks_of_other_maps_are_ignored_and_two_peak_starts_are_frozen():
    score = rectangle_map([OBJECT]).repeat(2, 1, 1)
    start = torch.tensor([[18.0, 22.0, 30.0, 34.0], [17.0, 21.0, 40.0, 40.0]])
    peaks = torch.tensor([[40.0, 40.0], [20.0, 25.0], [35.0, 36.0], [2.0, 2.0]])
    result = ccgr_refine_with_trace(
        score, start, torch.tensor([0, 1]), peaks=peaks, peak_map_idx=torch.tensor([1, 0, 1, 1])
    )
    assert iou(result.boxes[0], torch.tensor(OBJECT)) >= 0.85  # (40, 40) belongs to map 1 only
    assert torch.equal(result.boxes[1], start[1])  # starts with two peaks of map 1 inside
    assert result.stopped.tolist() == [False, True]


def test_batched_equals_one_call_per_box():
    gen = torch.Generator().manual_seed(3)
    maps = torch.cat((rectangle_map([OBJECT], blur=True), graded_map(), torch.rand(1, 64, 64, generator=gen)))
    corners = torch.rand(9, 2, generator=gen) * 40
    starts = torch.cat((corners, corners + 6 + torch.rand(9, 2, generator=gen) * 20), dim=1)
    map_idx = torch.arange(9) % 3
    peaks = torch.tensor(
        [[30.0, 30.0], [45.0, 40.0], [10.0, 50.0], [40.0, 40.0], [20.0, 24.0], [30.0, 20.0], [40.0, 20.0]]
    )
    peak_map_idx = torch.tensor([0, 0, 2, 1, 1, 2, 2])
    batched = ccgr_refine_with_trace(maps, starts, map_idx, peaks=peaks, peak_map_idx=peak_map_idx, iters=60)
    assert 0 < int(batched.stopped.sum()) < 9  # both frozen and free boxes in the batch
    for k in range(9):
        alone = ccgr_refine_with_trace(
            maps, starts[k : k + 1], map_idx[k : k + 1], peaks=peaks, peak_map_idx=peak_map_idx, iters=60
        )
        assert torch.equal(alone.boxes[0], batched.boxes[k])  # Adam is elementwise: no coupling between boxes
        assert torch.equal(alone.stopped[0], batched.stopped[k])


def test_trace_and_refine_agree():
    score = rectangle_map([OBJECT], blur=True)
    start, map_idx = torch.tensor([[18.0, 22.0, 30.0, 34.0]]), torch.tensor([0])
    result = ccgr_refine_with_trace(score, start, map_idx, iters=50)
    assert isinstance(result, CCGRResult)
    assert result.loss_per_iter.shape == (50,) and result.gap_per_box.shape == (1,) and result.stopped.shape == (1,)
    assert result.loss_per_iter[-1] < result.loss_per_iter[0]
    refined = ccgr_refine(score, start, map_idx, iters=50)
    assert type(refined) is torch.Tensor and torch.equal(refined, result.boxes)
    expected_gap = -ccgr_loss(integral_image(score), refined.double(), map_idx)
    assert torch.allclose(result.gap_per_box.double(), expected_gap, atol=1e-5)


def test_boxes_stay_valid_inside_the_map():
    gen = torch.Generator().manual_seed(4)
    maps = torch.rand(4, 40, 30, generator=gen)
    starts = torch.tensor(
        [[-5.0, -3.0, 10.0, 12.0], [25.0, 30.0, 45.0, 50.0], [10.0, 10.0, 10.5, 10.2], [0.0, 0.0, 30.0, 40.0]]
    )
    result = ccgr_refine_with_trace(maps, starts, torch.tensor([0, 1, 2, 3]), lr=3.0)
    boxes = result.boxes
    assert result.boxes.dtype == torch.float32
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 30).all() and (boxes[:, 3] <= 40).all())
    assert bool(((boxes[:, 2:] - boxes[:, :2]) >= 2.0 - 1e-5).all())
    assert bool(torch.isfinite(result.gap_per_box).all() and torch.isfinite(result.loss_per_iter).all())


def test_no_boxes_and_no_iterations():
    score = rectangle_map([OBJECT])
    empty = ccgr_refine(score, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, 4)
    start = torch.tensor([[18.0, 22.0, 30.0, 34.0]])
    assert torch.equal(ccgr_refine(score, start, torch.tensor([0]), iters=0), start)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score_maps": torch.zeros(64, 64)}, "score_maps must be a tensor"),
        ({"score_maps": torch.zeros(1, 8, 8, dtype=torch.long)}, "floating point"),
        ({"boxes": torch.zeros(1, 3)}, "boxes must be a tensor"),
        ({"boxes": torch.tensor([[5.0, 5.0, 4.0, 9.0]])}, "x1 < x2"),
        ({"boxes": torch.tensor([[float("nan"), 5.0, 9.0, 9.0]])}, "NaN"),
        ({"map_idx": torch.tensor([1])}, r"map_idx values must be in \[0, 0\]"),
        ({"map_idx": torch.tensor([0.0])}, "map_idx must be a LongTensor"),
        ({"map_idx": torch.tensor([0, 0])}, "map_idx must be a LongTensor"),
        ({"peaks": torch.zeros(1, 2)}, "given together"),
        ({"peaks": torch.zeros(1, 3), "peak_map_idx": torch.zeros(1, dtype=torch.long)}, "peaks must be"),
        ({"peaks": torch.zeros(1, 2), "peak_map_idx": torch.tensor([2])}, "peak_map_idx values"),
        ({"gap": "mean"}, "gap must be one of"),
        ({"moves": "inward"}, "moves must be one of"),
        ({"context_scale": 1.0}, "context_scale"),
        ({"iters": -1}, "iters"),
        ({"lr": 0.0}, "lr must be positive"),
    ],
)
def test_invalid_inputs_raise_value_error(kwargs, message):
    args = {
        "score_maps": torch.zeros(1, 8, 8),
        "boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]),
        "map_idx": torch.tensor([0]),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        ccgr_refine(args.pop("score_maps"), args.pop("boxes"), args.pop("map_idx"), **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    maps = torch.cat((rectangle_map([OBJECT], blur=True), graded_map()))
    starts = torch.tensor([[18.0, 22.0, 30.0, 34.0], [26.0, 27.0, 38.0, 37.0], [10.0, 10.0, 56.0, 56.0]])
    map_idx = torch.tensor([0, 1, 1])
    peaks, peak_map_idx = torch.tensor([[32.0, 32.0]]), torch.tensor([1])
    cpu = ccgr_refine_with_trace(maps, starts, map_idx, peaks=peaks, peak_map_idx=peak_map_idx)
    gpu = ccgr_refine_with_trace(
        maps.cuda(), starts.cuda(), map_idx.cuda(), peaks=peaks.cuda(), peak_map_idx=peak_map_idx.cuda()
    )
    assert gpu.boxes.is_cuda and gpu.boxes.dtype == torch.float32
    assert torch.allclose(gpu.boxes.cpu(), cpu.boxes, atol=1e-3)
    assert torch.equal(gpu.stopped.cpu(), cpu.stopped)
