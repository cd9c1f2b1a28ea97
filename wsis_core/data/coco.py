"""COCO instances files: the COCO layout (``ROOT/annotations/instances_<split>.json`` with images in
``ROOT/<split>/``, as COCO 2014/2017, e.g. split ``val2017``) and the tagged folder's optional
``ground_truth.json``.

Image ids are re-numbered 1..N in the order of the file's ``images`` list (the project's id contract);
class indices are the positions (from 1) of the categories sorted by their COCO id, or, where the class
list is given (tagged folder), the position of the category's name in it. Image-level labels are the
categories of an image's annotations; an annotation without ``segmentation`` is a tag only, and an
image has ground truth when the file carries masks and every annotation of that image has one.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from wsis_core.data.confine import inside, read_text_inside
from wsis_core.data.types import ImageGroundTruth, ImageInfo, InstanceMask
from wsis_core.errors import WsisInputError


def instances_path(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def is_coco_layout(root: Path) -> bool:
    return (root / "annotations").is_dir()


def split_names(root: Path) -> list[str]:
    """The splits that have an instances file."""
    return sorted(p.name[len("instances_"):-len(".json")] for p in (root / "annotations").glob("instances_*.json"))


class CocoInstances:
    """A parsed, validated COCO instances file. Holds annotations only for the ground-truth view."""

    def __init__(self, root: Path, relative: Path | str, classes: list[str] | None = None):
        self.path = root / relative
        data = self._load(root, relative)
        path = self.path
        categories = data["categories"]
        if not all(isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str) for c in categories):
            raise WsisInputError(f"{path}: every category needs an integer 'id' and a 'name'")
        categories = sorted(categories, key=lambda c: c["id"])
        if classes is None:
            self.classes = [c["name"] for c in categories]
            self._class_index = {c["id"]: i + 1 for i, c in enumerate(categories)}
        else:
            self.classes = list(classes)
            index = {name: i + 1 for i, name in enumerate(classes)}
            unknown = [c["name"] for c in categories if c["name"] not in index]
            if unknown:
                raise WsisInputError(f"{path}: category {unknown[0]!r} is not one of the dataset's classes")
            self._class_index = {c["id"]: index[c["name"]] for c in categories}
        self.records = data["images"]
        self._by_source_id: dict[int, list[dict]] = {}
        self._by_file_name: dict[str, dict] = {}
        for position, record in enumerate(self.records):
            self._check_record(record, position)
            self._by_source_id[record["id"]] = []
            self._by_file_name[PurePosixPath(record["file_name"]).as_posix()] = record
        for position, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                raise WsisInputError(f"{path}: annotations[{position}] is not an object")
            if ann.get("image_id") not in self._by_source_id:
                raise WsisInputError(f"{path}: annotation {ann.get('id', position)} has unknown image_id")
            if ann.get("category_id") not in self._class_index:
                raise WsisInputError(f"{path}: annotation {ann.get('id', position)} has unknown category_id")
            self._by_source_id[ann["image_id"]].append(ann)
        self.carries_masks = any("segmentation" in ann for ann in data["annotations"])

    @staticmethod
    def _load(root: Path, relative: Path | str) -> dict:
        path = root / relative
        text = read_text_inside(root, relative, "instances file", max_bytes=None)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WsisInputError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise WsisInputError(f"{path}: not a COCO instances file (not an object)")
        for key in ("images", "categories"):
            if not isinstance(data.get(key), list):
                raise WsisInputError(f"{path}: not a COCO instances file ({key} is not a list)")
        if not isinstance(data.setdefault("annotations", []), list):
            raise WsisInputError(f"{path}: not a COCO instances file (annotations is not a list)")
        return data

    def _check_record(self, record, position: int) -> None:
        where = f"{self.path}: images[{position}]"
        if not isinstance(record, dict):
            raise WsisInputError(f"{where} is not an object")
        for key, kind in (("id", int), ("file_name", str), ("width", int), ("height", int)):
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                raise WsisInputError(f"{where} has no {kind.__name__} {key!r}")
        if record["id"] in self._by_source_id:
            raise WsisInputError(f"{where}: duplicate image id {record['id']}")

    def labels(self, record: dict) -> tuple[int, ...]:
        """Image-level labels: the classes of the image's annotations (with or without masks)."""
        return tuple(sorted({self._class_index[a["category_id"]] for a in self._by_source_id[record["id"]]}))

    def record_for(self, file_name: str) -> dict | None:
        return self._by_file_name.get(PurePosixPath(file_name).as_posix())

    def has_masks(self, record: dict | None) -> bool:
        """Whether an image record has ground truth here (the file carries masks, and so does every
        annotation of the image)."""
        return (record is not None and self.carries_masks
                and all("segmentation" in a for a in self._by_source_id[record["id"]]))

    def ground_truth(self, record: dict, height: int, width: int) -> ImageGroundTruth:
        """Instances of one image; crowd regions and ``void_segmentation`` become void pixels."""
        if (record["height"], record["width"]) != (height, width):
            raise WsisInputError(f"{self.path}: {record['file_name']} is {record['width']}x{record['height']} here, "
                                 f"{width}x{height} on disk")
        instances, void = [], np.zeros((height, width), dtype=bool)
        if "void_segmentation" in record:  # written by `wsis convert` for VOC void pixels
            void |= _annotation_mask(record["void_segmentation"], height, width, self.path)
        for ann in self._by_source_id[record["id"]]:
            mask = _annotation_mask(ann["segmentation"], height, width, self.path)
            if ann.get("iscrowd", 0):
                void |= mask
            else:
                instances.append(InstanceMask(self._class_index[ann["category_id"]], mask))
        return ImageGroundTruth(instances, void)


class CocoSplit:
    """One split of a COCO layout: its instances file and its image folder."""

    def __init__(self, root: Path, split: str):
        self.instances = CocoInstances(root, instances_path(root, split).relative_to(root))
        if not self.instances.records:
            raise WsisInputError(f"{self.instances.path}: split '{split}' has no images")
        self.classes = self.instances.classes
        self.root, self.split = root, split

    def images(self) -> list[ImageInfo]:
        """The weak view: files, sizes and image-level labels (the categories present)."""
        return [
            ImageInfo(image_id, r["file_name"], inside(self.root, Path(self.split) / r["file_name"], "image"),
                      r["width"], r["height"], self.instances.labels(r))
            for image_id, r in enumerate(self.instances.records, start=1)
        ]

    def has_ground_truth(self, info: ImageInfo) -> bool:
        return self.instances.has_masks(self.instances.records[info.id - 1])

    def ground_truth(self, info: ImageInfo) -> ImageGroundTruth:
        return self.instances.ground_truth(self.instances.records[info.id - 1], info.height, info.width)


def _annotation_mask(segmentation, height: int, width: int, path: Path) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE → [H, W] bool (pycocotools)."""
    try:
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        return mask_utils.decode(rle).astype(bool)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise WsisInputError(f"{path}: a segmentation is neither polygons nor RLE ({type(exc).__name__})") from None
