"""Pseudo instance labels: the SS score map cropped with refined boxes (paper, "Center-context-gap
refinement": "we directly crop the segmentation map with the refined boxes as the pseudo instance
labels for training the IS branch").

Inside each box, a pixel belongs to the instance when the box's class wins the score map's argmax
there (``mode="argmax"``, the paper's crop) or its class score exceeds ``threshold``
(``mode="threshold"``). ``mode="grabcut"`` cuts the object out of the image instead: GrabCut (Rother et
al. 2004, as "Simple Does It", Khoreva et al. 2017, makes masks from boxes) with the box as its probable
foreground and everything outside as background; where the cut keeps less than ``min_fill`` of the box
(it settled on a fragment), the argmax crop of S is the mask. S is trained on the classifier's evidence,
which on a part-discriminative class covers the part, not the object; the image's own colours outline the
whole object inside a good box.

A pixel claimed by several instances goes to the one whose class scores highest there (GrabCut: to the
smallest box), ties (same class) to the smallest box, which is the front object when same-class
instances overlap. Instances smaller than ``min_pixels`` are dropped. The union of the instances of a
class is the next round's semantic label of that class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from wsis_core import masks
from wsis_core.choices import CROP_MODES, PSEUDO_BOXES

GRABCUT_SEED = 0  # OpenCV's generator (GrabCut's k-means start) is reseeded before every cut


@dataclass(frozen=True)
class InstanceLabel:
    """One pseudo instance: class index, [H, W] bool mask, the refined box (x1, y1, x2, y2), score."""

    category_id: int
    mask: np.ndarray
    box: tuple[float, float, float, float]
    score: float


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[K, H, W] bool: pixels whose centre lies inside each (x1, y1, x2, y2) box."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    return inside_y[:, :, None] & inside_x[:, None, :]


def grabcut_mask(image: np.ndarray, box_mask: np.ndarray, iters: int) -> np.ndarray | None:
    """GrabCut foreground [H, W] bool of an RGB uint8 ``image`` [H, W, 3] inside ``box_mask`` (probable
    foreground; the rest of the image is background), or None where the cut cannot run (an empty box, or a
    box that leaves no background)."""
    if box_mask.sum() < 2 or box_mask.all():
        return None
    labels = np.where(box_mask, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(GRABCUT_SEED)  # this thread's generator: a cut does not depend on the cuts before it
    try:
        cv2.grabCut(np.ascontiguousarray(image), labels, None, background, foreground, iters,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a colour model it cannot fit (e.g. too few distinct pixels)
        return None
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def crop_instances(
    score_map: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    *,
    mode: str = "argmax",
    threshold: float = 0.5,
    image: np.ndarray | None = None,
    grabcut_iters: int = 5,
    grabcut_min_fill: float = 0.2,
) -> torch.Tensor:
    """Instance masks [K, H, W] of one image from its score map [C+1, H, W] and K class boxes (``grabcut``
    also needs the RGB ``image``).

    Overlaps are resolved so that every pixel belongs to at most one instance.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
    _, height, width = score_map.shape
    class_scores = score_map[classes]  # [K, H, W]
    inside = box_masks(boxes, height, width)
    if mode == "threshold":
        foreground = class_scores > threshold
    else:
        foreground = score_map.argmax(dim=0)[None] == classes[:, None, None]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    tie_break = areas / (areas.max() + 1) * 1e-4  # smaller box wins among equal class scores
    if mode == "grabcut":
        if image is None:
            raise ValueError("mode 'grabcut' needs the image")
        for k, box_mask in enumerate(inside.cpu().numpy()):
            cut = grabcut_mask(image, box_mask, grabcut_iters)
            if cut is not None and cut.sum() >= grabcut_min_fill * box_mask.sum():
                foreground[k] = torch.from_numpy(cut).to(foreground.device)
        priority = -tie_break[:, None, None].expand_as(class_scores)  # the cut knows no class score: the front box
    else:
        priority = class_scores.float() - tie_break[:, None, None]
    claimed = inside & foreground
    priority = torch.where(claimed, priority, torch.tensor(-2.0))
    owner = priority.argmax(dim=0)
    return claimed & (owner[None] == torch.arange(len(boxes), device=boxes.device)[:, None, None])


def make_instance_labels(
    score_map: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    scores: torch.Tensor,
    *,
    mode: str = "argmax",
    threshold: float = 0.5,
    min_pixels: int = 10,
    image: np.ndarray | None = None,
    grabcut_iters: int = 5,
    grabcut_min_fill: float = 0.2,
) -> list[InstanceLabel]:
    """Pseudo instances of one image (see :func:`crop_instances`), empty and tiny ones dropped."""
    if len(boxes) == 0:
        return []
    instance_masks = crop_instances(
        score_map, boxes, classes, mode=mode, threshold=threshold, image=image, grabcut_iters=grabcut_iters,
        grabcut_min_fill=grabcut_min_fill,
    ).cpu().numpy()
    return [
        InstanceLabel(int(c), m, tuple(float(v) for v in b), float(s))
        for m, b, c, s in zip(instance_masks, boxes.tolist(), classes.tolist(), scores.tolist())
        if m.sum() >= min_pixels
    ]


def to_coco_annotations(
    image_id: int, instances: list[InstanceLabel], first_id: int = 1, box: str = "refined"
) -> list[dict]:
    """COCO annotations: RLE ``segmentation``, ``bbox`` (x, y, w, h) of the refined box (``box="refined"``) or of
    the mask's extent (``box="mask"``, COCO's own convention: the box the IS branch learns then agrees with the
    mask it learns), ``category_id``, ``score``, ``area`` and ``iscrowd`` 0, numbered from ``first_id``."""
    if box not in PSEUDO_BOXES:
        raise ValueError(f"box must be one of {PSEUDO_BOXES}, got {box!r}")
    annotations = []
    for offset, instance in enumerate(instances):
        rle = masks.encode(instance.mask)
        x1, y1, x2, y2 = instance.box
        bbox = masks.to_bbox(rle) if box == "mask" else [x1, y1, x2 - x1, y2 - y1]
        annotations.append({
            "id": first_id + offset,
            "image_id": image_id,
            "category_id": instance.category_id,
            "segmentation": rle,
            "bbox": bbox,
            "area": masks.area(rle),
            "iscrowd": 0,
            "score": instance.score,
        })
    return annotations


def semantic_label_from_instances(instances: Iterable[tuple[int, np.ndarray]], height: int, width: int) -> np.ndarray:
    """uint8 [H, W] class map from (class index, [H, W] bool mask) pairs: the union of each class's
    instance masks (the SS labels of rounds after the first), 0 elsewhere."""
    label = np.zeros((height, width), dtype=np.uint8)
    for category_id, mask in instances:
        label[mask] = category_id
    return label
