"""Two views of a dataset split: the weak view for training and the ground-truth view for evaluation.

``open_weak_dataset`` returns images and image-level labels only; it keeps no reference to any
mask or box. ``open_ground_truth`` is the only way to reach instance masks; it refuses to run
inside :func:`wsis_core.data.guard.weak_supervision`. Three layouts are detected from the folder:
tagged folder (``labels.csv``), VOC (``JPEGImages/``) and COCO (``annotations/``). Ground truth is
optional in all three, per image: a split may have masks for all, some or none of its images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsis_core.data import coco, tagged, voc
from wsis_core.data.guard import ensure_ground_truth_allowed
from wsis_core.data.images import image_size, load_rgb
from wsis_core.data.types import ImageGroundTruth, ImageInfo
from wsis_core.errors import WsisInputError

LAYOUTS = ("tagged", "voc", "coco")


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


class _Source:
    """One layout's reader: classes, splits, the weak view of a split and per-image ground truth."""

    def __init__(self, root: Path, layout: str):
        self.root, self.layout = root, layout
        self._tagged = tagged.TaggedFolder(root) if layout == "tagged" else None
        self._coco: dict[str, coco.CocoSplit] = {}

    def _coco_split(self, split: str) -> coco.CocoSplit:
        if split not in self._coco:
            self._coco[split] = coco.CocoSplit(self.root, split)
        return self._coco[split]

    def splits(self) -> list[str]:
        if self.layout == "tagged":
            return self._tagged.splits
        return voc.split_names(self.root) if self.layout == "voc" else coco.split_names(self.root)

    def classes(self, split: str) -> list[str]:
        if self.layout == "tagged":
            return self._tagged.classes
        return voc.read_classes(self.root) if self.layout == "voc" else self._coco_split(split).classes

    def images(self, split: str) -> list[ImageInfo]:
        if self.layout == "tagged":
            return self._tagged.images(split)
        if self.layout == "voc":
            return voc.read_images(self.root, split, voc.read_classes(self.root))
        return self._coco_split(split).images()

    def has_ground_truth(self, info: ImageInfo, split: str) -> bool:
        if self.layout == "tagged":
            return self._tagged.has_ground_truth(info)
        if self.layout == "voc":
            return voc.has_ground_truth(self.root, info)
        return self._coco_split(split).has_ground_truth(info)

    def read_ground_truth(self, info: ImageInfo, split: str) -> ImageGroundTruth:
        if self.layout == "tagged":
            return self._tagged.read_ground_truth(info)
        if self.layout == "voc":
            return voc.read_ground_truth(self.root, info)
        return self._coco_split(split).ground_truth(info)


class GroundTruth:
    """Instance masks and void pixels of the images of a split that have ground truth, for evaluation
    and the fully supervised baseline. ``images`` lists those images only (ids per the id contract of
    the whole split); ``total`` counts every image of the split."""

    def __init__(self, root: Path, split: str):
        ensure_ground_truth_allowed(f"{root} split {split}")
        self.root = root
        self.split = split
        self._source = _Source(root, detect_layout(root))
        self.classes = self._source.classes(split)
        every = self._source.images(split)
        self.total = len(every)
        self.images = [info for info in every if self._source.has_ground_truth(info, split)]

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> ImageGroundTruth:
        """Ground truth of the image at position ``index`` of :attr:`images`."""
        return self._source.read_ground_truth(self.images[index], self.split)


@dataclass(frozen=True)
class SplitSummary:
    """What registration reports of a split: its size and how many of its images have ground truth."""

    images: int
    with_ground_truth: int

    @classmethod
    def of(cls, truth: GroundTruth) -> SplitSummary:
        return cls(truth.total, len(truth.images))

    def to_dict(self) -> dict:
        return {"images": self.images, "with_ground_truth": self.with_ground_truth,
                "ground_truth": self.with_ground_truth > 0}


def detect_layout(data: str | Path) -> str:
    """``tagged``, ``voc`` or ``coco``, from what the folder holds; one-line error otherwise."""
    root = Path(data)
    if not root.is_dir():
        raise WsisInputError(f"{root}: dataset folder not found")
    if tagged.is_tagged_layout(root):
        return "tagged"
    if voc.is_voc_layout(root):
        return "voc"
    if coco.is_coco_layout(root):
        return "coco"
    raise WsisInputError(
        f"{root}: not a dataset: expected a tagged folder (labels.csv + images/), a VOC layout (JPEGImages/) "
        "or a COCO layout (annotations/)"
    )


def dataset_splits(data: str | Path) -> list[str]:
    """The split names a dataset folder defines."""
    root = Path(data)
    return _Source(root, detect_layout(root)).splits()


def open_weak_dataset(data: str | Path, split: str) -> WeakDataset:
    """Open a split of a dataset folder as images + image-level labels."""
    root = Path(data)
    source = _Source(root, detect_layout(root))
    return WeakDataset(root, split, source.classes(split), source.images(split))


def open_ground_truth(data: str | Path, split: str) -> GroundTruth:
    """Open a split's ground truth (evaluation, reports and ``--supervision full`` only)."""
    root = Path(data)
    detect_layout(root)
    return GroundTruth(root, split)


def summarize_split(data: str | Path, split: str) -> SplitSummary:
    """Size of a split and the number of its images with ground truth (registration, summaries)."""
    return SplitSummary.of(open_ground_truth(data, split))


def open_image_folder(folder: str | Path) -> WeakDataset:
    """Every .jpg/.jpeg/.png under ``folder`` (recursively, sorted by relative path) as a dataset without
    labels, for prediction; ``file_name`` is the path relative to ``folder``, ids 1..N in that order."""
    root = Path(folder)
    if not root.is_dir():
        raise WsisInputError(f"{root}: image folder not found")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in tagged.IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise WsisInputError(f"{root}: no .jpg, .jpeg or .png image in it")
    images = []
    for image_id, path in enumerate(paths, start=1):
        width, height = image_size(path)
        images.append(ImageInfo(image_id, path.relative_to(root).as_posix(), path, width, height, ()))
    return WeakDataset(root, "images", [], images)
