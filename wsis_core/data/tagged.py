"""Tagged-folder layout reader: a folder of images and a CSV of image-level tags (what most users have).

Layout::

    DIR/images/...          jpg, jpeg or png, sub-folders allowed
    DIR/labels.csv          header image,labels[,split]; image relative to images/, labels separated by ';'
    DIR/classes.txt         optional, one class per line (index = line number from 1)
    DIR/ground_truth.json   optional COCO instances file for any subset of the images (file_name
                            relative to images/), read only by evaluation and reports

Without a ``split`` column every image is in split ``train``. Image ids are 1..N in the order of
``labels.csv`` within a split; without ``classes.txt`` the classes are the sorted set of all names.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from wsis_core.data import coco
from wsis_core.data.confine import inside, read_text_inside
from wsis_core.data.images import image_size
from wsis_core.data.types import ImageGroundTruth, ImageInfo
from wsis_core.errors import WsisInputError

LABELS_FILE, IMAGES_FOLDER, CLASSES_FILE, GROUND_TRUTH_FILE = "labels.csv", "images", "classes.txt", "ground_truth.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_SPLIT = "train"
LABEL_SEPARATOR = ";"


def is_tagged_layout(root: Path) -> bool:
    return (root / LABELS_FILE).is_file()


@dataclass(frozen=True)
class Row:
    """One line of labels.csv: the image (relative to images/), its class names and its split."""

    line: int
    image: str
    names: tuple[str, ...]
    split: str


def _read_rows(root: Path) -> list[Row]:
    path = root / LABELS_FILE
    text = read_text_inside(root, LABELS_FILE, "labels file").removeprefix("\ufeff")  # a BOM from spreadsheet exports
    reader = csv.reader(text.splitlines())
    header = [cell.strip().lower() for cell in next(reader, [])]
    if header not in (["image", "labels"], ["image", "labels", "split"]):
        raise WsisInputError(f"{path} row 1: header must be image,labels or image,labels,split, got {','.join(header)!r}")
    rows, seen = [], {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise WsisInputError(f"{path} row {line}: expected {len(header)} columns, got {len(cells)}")
        image = cells[0].strip()
        _check_image_name(path, line, image)
        if image in seen:
            raise WsisInputError(f"{path} row {line}: duplicate row for {image} (first in row {seen[image]})")
        seen[image] = line
        names = tuple(dict.fromkeys(n.strip() for n in cells[1].split(LABEL_SEPARATOR) if n.strip()))
        split = cells[2].strip() if len(header) == 3 else DEFAULT_SPLIT
        if not split:
            raise WsisInputError(f"{path} row {line}: empty split")
        rows.append(Row(line, image, names, split))
    if not rows:
        raise WsisInputError(f"{path}: no images listed")
    return rows


def _check_image_name(labels_path: Path, line: int, image: str) -> None:
    name = PurePosixPath(image.replace("\\", "/"))
    if not image:
        raise WsisInputError(f"{labels_path} row {line}: empty image name")
    if name.is_absolute() or ".." in name.parts:
        raise WsisInputError(f"{labels_path} row {line}: {image}: must be a path inside images/")
    if name.suffix.lower() not in IMAGE_SUFFIXES:
        raise WsisInputError(f"{labels_path} row {line}: {image}: not a .jpg, .jpeg or .png file")


def _read_classes(root: Path, rows: list[Row]) -> list[str]:
    path = root / CLASSES_FILE
    if not path.exists():
        names = sorted({name for row in rows for name in row.names})
        if not names:
            raise WsisInputError(f"{root / LABELS_FILE}: no image has a label (and there is no classes.txt)")
        return names
    names = [line.strip() for line in read_text_inside(root, CLASSES_FILE, "class list").splitlines() if line.strip()]
    if not names:
        raise WsisInputError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise WsisInputError(f"{path}: duplicate class names")
    known = set(names)
    for row in rows:
        unknown = [n for n in row.names if n not in known]
        if unknown:
            raise WsisInputError(f"{root / LABELS_FILE} row {row.line}: unknown class {unknown[0]!r} (not in classes.txt)")
    return names


class TaggedFolder:
    """A parsed tagged folder: classes, splits and, on demand, the optional ground truth."""

    def __init__(self, root: Path):
        self.root = root
        self.rows = _read_rows(root)
        self.classes = _read_classes(root, self.rows)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(row.split for row in self.rows))

    def images(self, split: str) -> list[ImageInfo]:
        """The weak view of a split: image files, sizes and image-level labels, in labels.csv order."""
        rows = [row for row in self.rows if row.split == split]
        if not rows:
            raise WsisInputError(f"{self.root / LABELS_FILE}: split '{split}' has no images (splits: {', '.join(self.splits)})")
        index = {name: i + 1 for i, name in enumerate(self.classes)}
        infos = []
        for image_id, row in enumerate(rows, start=1):
            try:
                path = inside(self.root, PurePosixPath(IMAGES_FOLDER) / row.image, "image")  # images/ may be a link
            except WsisInputError as exc:
                raise WsisInputError(f"{self.root / LABELS_FILE} row {row.line}: {exc}") from None
            if not path.is_file():
                raise WsisInputError(f"{self.root / LABELS_FILE} row {row.line}: images/{row.image}: image not found")
            width, height = image_size(path)
            labels = tuple(sorted(index[name] for name in row.names))
            infos.append(ImageInfo(image_id, PurePosixPath(row.image).as_posix(), path, width, height, labels))
        return infos

    @cached_property
    def ground_truth(self) -> coco.CocoInstances | None:
        """``ground_truth.json`` parsed (None when the folder has none); categories matched by name."""
        path = self.root / GROUND_TRUTH_FILE
        if not path.exists():
            return None
        return coco.CocoInstances(self.root, GROUND_TRUTH_FILE, self.classes)

    def has_ground_truth(self, info: ImageInfo) -> bool:
        return self.ground_truth is not None and self.ground_truth.has_masks(self.ground_truth.record_for(info.file_name))

    def read_ground_truth(self, info: ImageInfo) -> ImageGroundTruth:
        return self.ground_truth.ground_truth(self.ground_truth.record_for(info.file_name), info.height, info.width)
