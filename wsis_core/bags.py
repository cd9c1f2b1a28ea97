"""MIL bags: a bag per peak (first round) or per predicted instance box (later rounds).

Paper, section "Multiple instance learning branch": a peak of the classifier response map is a
bag, its instances are the proposals containing only this peak, and the bag takes the peak's class.
Section "Iterative optimization and its initialization": the candidates of a peak are ranked by
Eq. 4,

    R(B) = B_S - lambda * (B * (1 - O)) / |B|,     lambda = 0.1,

(B_S: objectness, O: foreground score map of the peak's class, ``*``: Frobenius inner product with
the box's indicator, |B|: box area) and the top 10 are kept. In later rounds a bag is a box
predicted by the instance segmentation branch and its instances are the 10 proposals with the
highest IoU with it.

Conventions: boxes are (x1, y1, x2, y2) in continuous pixel coordinates (pixel (i, j) covers
[j, j+1) x [i, i+1), see :mod:`wsis_core.proposals`); a peak (x, y) is inside a box when
x1 <= x <= x2 and y1 <= y <= y2; class labels are 1-based (0 is background).

Peaks without candidates: when no proposal contains the peak and no other peak of the image (for
example two peaks on one object), the bag falls back to the proposals containing the peak, whatever
other peaks they contain, and is marked ``exclusive=False``. A peak inside no proposal at all gets
no bag; :class:`BagBuild` counts such dropped peaks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from wsis_core.ccgr import box_area, box_sum, integral_image
from wsis_core.profiles import MilConfig
from wsis_core.progress import Progress

DEFAULT_TOP_K = MilConfig().top_k  # the paper's 10
DEFAULT_LAMBDA = MilConfig().lam  # the paper's 0.1


@dataclass(frozen=True, eq=False)
class Bag:
    """One MIL bag of an image.

    label: 1-based class of the peak / predicted box. proposal_indices: LongTensor [R] (R <= top_k)
    into the image's proposal list, best ranked first. source: the peak (x, y) or the predicted box
    (x1, y1, x2, y2) the bag was built from. exclusive: False when the candidates had to include
    proposals containing other peaks too (see the module docstring).
    """

    image_id: int
    label: int
    proposal_indices: torch.Tensor
    source: tuple[float, ...]
    exclusive: bool = True


@dataclass(frozen=True)
class BagBuild:
    """Outcome of :func:`build_bags`: the bags of each image and how the peaks fared."""

    bags_by_image: dict[int, list[Bag]]
    num_peaks: int
    num_relaxed: int  # bags built from proposals that also contain other peaks
    num_dropped: int  # peaks inside no proposal (no bag)


def background_fraction(boxes: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """(B * (1 - O)) / |B| of Eq. 4 for every box on every map, [K, N].

    boxes: [N, 4]; maps: foreground scores O, [K, H, W] in [0, 1]. One summed-area table of
    1 - O per map gives all box sums at once (exact for fractional boxes: a partly covered pixel
    counts with its covered area). Boxes are clipped to the map first.
    """
    maps = maps.to(torch.float64)
    num_maps, height, width = maps.shape
    limit = maps.new_tensor([width, height, width, height])
    clipped = torch.minimum(boxes.to(torch.float64).clamp(min=0), limit)
    table = integral_image(1 - maps)
    map_idx = torch.arange(num_maps).unsqueeze(1).expand(num_maps, len(clipped))
    sums = box_sum(table, map_idx, clipped.expand(num_maps, -1, -1))
    return (sums / box_area(clipped).clamp(min=1e-6)).to(torch.float32)


def rank_scores(boxes, objectness, maps, lam: float = DEFAULT_LAMBDA) -> torch.Tensor:
    """Eq. 4, R(B) = B_S - lambda * (B * (1 - O)) / |B|, for N boxes on K maps, [K, N]."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    objectness = torch.as_tensor(objectness, dtype=torch.float32)
    return objectness - lam * background_fraction(boxes, torch.as_tensor(maps))


def peaks_inside(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """[P, N] bool: point p lies in the closed box n (x1 <= x <= x2 and y1 <= y <= y2)."""
    x, y = points[:, 0:1], points[:, 1:2]
    return (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])


def _top_bags(image_id: int, scores: torch.Tensor, candidates: torch.Tensor, labels, sources, exclusive, top_k):
    """One bag per row of ``candidates`` [P, N] that has any: its top ``top_k`` candidates by ``scores``."""
    masked = scores.masked_fill(~candidates, float("-inf"))
    best, order = masked.topk(min(top_k, masked.shape[1]), dim=1)
    keep = best > float("-inf")
    return [
        Bag(image_id, int(labels[p]), order[p][keep[p]], tuple(map(float, sources[p])), bool(exclusive[p]))
        for p in range(len(candidates))
        if keep[p].any()
    ]


def bags_for_peaks(
    image_id: int,
    peaks: list[dict],
    class_maps,
    boxes,
    objectness,
    *,
    top_k: int = DEFAULT_TOP_K,
    lam: float = DEFAULT_LAMBDA,
) -> list[Bag]:
    """First-round bags of one image: one per peak, its top ``top_k`` exclusive proposals by Eq. 4.

    peaks: ``{"class": c, "x": x, "y": y, ...}`` with c 1-based. class_maps: the foreground maps O,
    indexed by class: a dict class -> [H, W] array, or a [C+1, H, W] array whose channel c is class c
    (channel 0, background, is not used). O is at the image's resolution, values in [0, 1].
    boxes [N, 4] / objectness [N]: the image's proposals (numpy or torch).
    """
    if not peaks:
        return []
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([int(p["class"]) for p in peaks])
    points = torch.tensor([[float(p["x"]), float(p["y"])] for p in peaks])
    classes, class_row = torch.unique(labels, return_inverse=True)
    maps = torch.stack([torch.as_tensor(np.asarray(class_maps[int(c)]), dtype=torch.float32) for c in classes])
    scores = rank_scores(boxes, objectness, maps, lam)[class_row]  # [P, N]: each peak's class map
    inside = peaks_inside(boxes, points)
    exclusive = inside & (inside.sum(dim=0) == 1)
    has_exclusive = exclusive.any(dim=1)
    candidates = torch.where(has_exclusive.unsqueeze(1), exclusive, inside)
    return _top_bags(image_id, scores, candidates, labels, points.tolist(), has_exclusive, top_k)


def bags_from_boxes(image_id: int, boxes, labels, proposal_boxes, *, top_k: int = DEFAULT_TOP_K) -> list[Bag]:
    """Later-round bags of one image: one per predicted box [M, 4] with 1-based ``labels`` [M];
    its instances are the ``top_k`` proposals with the highest IoU (torchvision ``box_iou``)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    proposal_boxes = torch.as_tensor(proposal_boxes, dtype=torch.float32).reshape(-1, 4)
    if len(boxes) == 0 or len(proposal_boxes) == 0:
        return []
    iou = box_iou(boxes, proposal_boxes)
    everything = torch.ones_like(iou, dtype=torch.bool)
    exclusive = torch.ones(len(boxes), dtype=torch.bool)
    return _top_bags(image_id, iou, everything, torch.as_tensor(labels), boxes.tolist(), exclusive, top_k)


def _lookup(source) -> Callable:
    return source if callable(source) else source.__getitem__


def build_bags(
    image_ids,
    peaks,
    foreground,
    proposals,
    *,
    cfg: MilConfig = MilConfig(),
    on_progress: Progress = None,
) -> BagBuild:
    """Stage (first round): bags of every image in ``image_ids``, see :func:`bags_for_peaks`.

    peaks / foreground: mappings (or callables) image id -> list of peak dicts / class maps O.
    proposals: any source with ``proposals_for(image_id)`` (:mod:`wsis_core.proposals`).
    ``cfg`` (``profile.mil``) gives ``top_k`` and the background penalty ``lam``. Images without peaks get an
    empty list. ``on_progress(done, total)`` after each image.
    """
    peaks_of, maps_of = _lookup(peaks), _lookup(foreground)
    image_ids = list(image_ids)
    bags_by_image, num_peaks, num_relaxed, num_dropped = {}, 0, 0, 0
    for done, image_id in enumerate(image_ids, start=1):
        image_peaks = peaks_of(image_id)
        bags = []
        if image_peaks:
            boxes, objectness = proposals.proposals_for(image_id)
            bags = bags_for_peaks(
                image_id, image_peaks, maps_of(image_id), boxes, objectness, top_k=cfg.top_k, lam=cfg.lam
            )
        bags_by_image[image_id] = bags
        num_peaks += len(image_peaks)
        num_relaxed += sum(not bag.exclusive for bag in bags)
        num_dropped += len(image_peaks) - len(bags)
        if on_progress:
            on_progress(done, len(image_ids))
    return BagBuild(bags_by_image, num_peaks, num_relaxed, num_dropped)


def build_bags_from_boxes(
    predictions: Mapping[int, tuple],
    proposals,
    *,
    cfg: MilConfig = MilConfig(),
    on_progress: Progress = None,
) -> dict[int, list[Bag]]:
    """Stage (later rounds): image id -> (boxes [M, 4], labels [M]) predicted by the IS branch to
    bags of ``cfg.top_k`` proposals (``profile.mil``), see :func:`bags_from_boxes`. ``on_progress(done, total)`` after each image."""
    bags_by_image = {}
    for done, (image_id, (boxes, labels)) in enumerate(predictions.items(), start=1):
        proposal_boxes, _ = proposals.proposals_for(image_id)
        bags_by_image[image_id] = bags_from_boxes(image_id, boxes, labels, proposal_boxes, top_k=cfg.top_k)
        if on_progress:
            on_progress(done, len(predictions))
    return bags_by_image
