"""Peaks of the class response maps (PRM, Zhou et al. 2018).

The paper's MIL branch takes each peak of a present class's response map as a bag ("Iterative
optimization and its initialization"): "an object instance often covers a peak in the classifier
response map". A peak is a local maximum over a ``window x window`` neighbourhood (PRM: 3x3) found by
comparing the map with its max-pooled self, kept when it reaches ``threshold`` of the map's range
(``(value - min) / (max - min)``, i.e. the fraction of the map's maximum for a rectified map) and, when
``min_score`` is given, when its response is above it: a response at or below 0 is evidence against the class
(PRM keeps only peaks of the rectified map), and, with ``min_ratio``, when it reaches that fraction of the
class map's maximum (secondary peaks far below their class's best one sit on clutter). The global maximum of
every present class is always a peak, so every present class gets at least one bag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from wsis_core.backbone import iterate_images, present_classes
from wsis_core.classifier import Classifier
from wsis_core.profiles import ClassifierConfig
from wsis_core.progress import Progress


class Peak(NamedTuple):
    class_index: int  # 1-based class (response-map channel k is class k + 1)
    y: int
    x: int
    score: float  # response value at the peak


def local_peaks(
    maps: torch.Tensor, present: torch.Tensor, window: int, threshold: float, min_score: float | None = None,
    min_ratio: float = 0.0,
) -> list[list[Peak]]:
    """Peaks of the maps [B, C, h, w] of the present classes (bool [B, C]), per image, best first; with
    ``min_score``, only responses above it, with ``min_ratio``, only those reaching that fraction of their
    map's maximum (besides each present class's global maximum)."""
    pooled = F.max_pool2d(maps, kernel_size=window, stride=1, padding=window // 2)
    flat = maps.flatten(2)
    low, high = flat.amin(-1), flat.amax(-1)
    relative = (maps - low[..., None, None]) / (high - low).clamp_min(1e-12)[..., None, None]
    is_peak = (maps == pooled) & (relative >= threshold)
    if min_score is not None:
        is_peak &= maps > min_score
    if min_ratio > 0:
        is_peak &= maps >= min_ratio * high[..., None, None]
    is_peak = is_peak.flatten(2)
    is_peak.scatter_(2, flat.argmax(-1, keepdim=True), True)
    is_peak &= present.to(maps.device)[..., None]
    b, c, pos = is_peak.nonzero(as_tuple=True)
    scores = flat[b, c, pos]
    order = torch.argsort(scores, descending=True, stable=True)
    width = maps.shape[-1]
    peaks: list[list[Peak]] = [[] for _ in range(maps.shape[0])]
    for bi, ci, p, s in zip(b[order].tolist(), c[order].tolist(), pos[order].tolist(), scores[order].tolist()):
        peaks[bi].append(Peak(ci + 1, p // width, p % width, s))
    return peaks


def to_image_coordinate(cell: int, map_size: int, image_size: int) -> int:
    """Centre of response-map cell ``cell`` in pixels of an image of ``image_size`` (same axis)."""
    return min(image_size - 1, max(0, int((cell + 0.5) * image_size / map_size)))


@torch.no_grad()
def find_peaks(
    classifier: Classifier,
    dataset,
    device: torch.device,
    *,
    cfg: ClassifierConfig,
    input_size: int,
    batch_size: int,
    indices: Sequence[int] | None = None,
    on_progress: Progress = None,
) -> list[list[dict]]:
    """PRM peaks of the image-level classes of each image (all, or those at ``indices``), with the peak
    window, threshold and minimum score of ``cfg`` (``profile.cls``), in batches of ``batch_size``.

    Returns, per image, ``{"class", "x", "y", "score"}`` dicts with x, y in pixels of the original image.
    """
    classifier = classifier.to(device).eval()
    indices = range(len(dataset)) if indices is None else indices
    results: list[list[dict]] = []
    for positions, images, sizes in iterate_images(
        dataset, indices, input_size, batch_size, device, on_progress
    ):
        maps = classifier.response_maps(images)
        h, w = maps.shape[-2:]
        per_image = local_peaks(
            maps, present_classes(dataset, positions), cfg.peak_window, cfg.peak_threshold, cfg.peak_min_score,
            cfg.peak_min_ratio,
        )
        for peaks, (height, width) in zip(per_image, sizes):
            results.append(
                [
                    {
                        "class": p.class_index,
                        "x": to_image_coordinate(p.x, w, width),
                        "y": to_image_coordinate(p.y, h, height),
                        "score": p.score,
                    }
                    for p in peaks
                ]
            )
    return results
