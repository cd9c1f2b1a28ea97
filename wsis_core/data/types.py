"""In-memory dataset types shared by the VOC and COCO readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VOID = 255  # VOC's "void / ignore" value in SegmentationClass and SegmentationObject


@dataclass(frozen=True)
class ImageInfo:
    """One image of a split with its image-level labels only (the weak view).

    ``id`` follows the project's contract: 1..N in the order of the split's list file.
    ``labels`` are 1-based class indices (0 is background) of the classes present in the image.
    """

    id: int
    file_name: str
    path: Path
    width: int
    height: int
    labels: tuple[int, ...]


@dataclass(frozen=True)
class InstanceMask:
    """One ground-truth instance: class index (1-based) and a [H, W] boolean mask."""

    category_id: int
    mask: np.ndarray


@dataclass(frozen=True)
class ImageGroundTruth:
    """Ground truth of one image: its instances and the void (ignore) pixels."""

    instances: list[InstanceMask]
    void: np.ndarray = field(repr=False)
