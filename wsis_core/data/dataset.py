"""Two views of a dataset split: the weak view for training and the ground-truth view for evaluation.

``open_weak_dataset`` returns images and image-level labels only; it keeps no reference to any
mask or box. ``open_ground_truth`` is the only way to reach instance masks; it refuses to run
inside :func:`wsis_core.data.guard.weak_supervision`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsis_core.data import coco, voc
from wsis_core.data.guard import ensure_ground_truth_allowed
from wsis_core.data.images import load_rgb
from wsis_core.data.types import ImageGroundTruth, ImageInfo
from wsis_core.errors import WsisInputError


class WeakDataset:
    """Images and image-level labels of one split (the only view the weak training code gets)."""

    def __init__(self, root: Path, split: str, classes: list[str], images: list[ImageInfo]):
        self.root = root
        self.split = split
        self.classes = classes
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB pixels of the image at position ``index`` (image id = index + 1)."""
        return load_rgb(self.images[index].path)


class GroundTruth:
    """Instance masks and void pixels of one split, for evaluation and the fully supervised baseline."""

    def __init__(self, root: Path, split: str):
        ensure_ground_truth_allowed(f"{root} split {split}")
        self.root = root
        self.split = split
        if voc.is_voc_layout(root):
            self.classes = voc.read_classes(root)
            self.images = voc.read_images(root, split, self.classes)
            self._read = lambda info: voc.read_ground_truth(root, info)
        else:
            source = coco.CocoSplit(root, split)
            self.classes = source.classes
            self.images = source.images()
            self._read = source.ground_truth

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> ImageGroundTruth:
        """Ground truth of the image at position ``index``."""
        return self._read(self.images[index])


def _check_root(data: str | Path) -> Path:
    root = Path(data)
    if not root.is_dir():
        raise WsisInputError(f"{root}: dataset folder not found")
    if not (voc.is_voc_layout(root) or coco.is_coco_layout(root)):
        raise WsisInputError(f"{root}: neither a VOC layout (JPEGImages/) nor a COCO layout (annotations/)")
    return root


def open_weak_dataset(data: str | Path, split: str) -> WeakDataset:
    """Open a split of a VOC- or COCO-layout folder as images + image-level labels."""
    root = _check_root(data)
    if voc.is_voc_layout(root):
        classes = voc.read_classes(root)
        return WeakDataset(root, split, classes, voc.read_images(root, split, classes))
    source = coco.CocoSplit(root, split)
    return WeakDataset(root, split, source.classes, source.images())


def open_ground_truth(data: str | Path, split: str) -> GroundTruth:
    """Open a split's ground truth (evaluation and ``--supervision full`` only)."""
    return GroundTruth(_check_root(data), split)
