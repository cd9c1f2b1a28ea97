"""COCO layout reader: ``ROOT/annotations/instances_<split>.json`` with images in ``ROOT/<split>/``.

This is the layout of COCO 2014/2017 (e.g. split ``val2017``). Image ids are re-numbered 1..N in the
order of the file's ``images`` list (the project's id contract); class indices are the positions
(from 1) of the categories sorted by their COCO id.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsis_core.data.confine import inside, read_text_inside
from wsis_core.data.types import ImageGroundTruth, ImageInfo, InstanceMask
from wsis_core.errors import WsisInputError


def instances_path(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def is_coco_layout(root: Path) -> bool:
    return (root / "annotations").is_dir()


class CocoSplit:
    """A parsed COCO instances file. Holds annotations only for the ground-truth view."""

    def __init__(self, root: Path, split: str):
        path = instances_path(root, split)
        text = read_text_inside(root, path.relative_to(root), "instances file", max_bytes=None)
        try:
            data = json.loads(text)
            categories = sorted(_checked(data["categories"], "categories", CATEGORY_FIELDS), key=lambda c: c["id"])
            self.classes = [c["name"] for c in categories]
            self._class_index = {c["id"]: i + 1 for i, c in enumerate(categories)}
            records = _checked(data["images"], "images", IMAGE_FIELDS)
            annotations = _checked(data.get("annotations", []), "annotations", {})
        except json.JSONDecodeError as exc:
            raise WsisInputError(f"{path}: not valid JSON ({exc})") from None
        except (KeyError, TypeError) as exc:
            raise WsisInputError(f"{path}: not a COCO instances file (missing {exc})") from None
        except ValueError as exc:
            raise WsisInputError(f"{path}: not a COCO instances file ({exc})") from None
        if len({r["id"] for r in records}) != len(records):
            raise WsisInputError(f"{path}: duplicate image id")
        if not records:
            raise WsisInputError(f"{path}: split '{split}' has no images")
        self.path = path
        self.root, self.split = root, split
        self.image_folder = root / split
        self._records = records
        self._by_source_id: dict[int, list[dict]] = {r["id"]: [] for r in records}
        for ann in annotations:
            if ann.get("image_id") not in self._by_source_id:
                raise WsisInputError(f"{path}: annotation {ann.get('id')} has unknown image_id")
            if ann.get("category_id") not in self._class_index:
                raise WsisInputError(f"{path}: annotation {ann.get('id')} has unknown category_id")
            self._by_source_id[ann["image_id"]].append(ann)

    def images(self) -> list[ImageInfo]:
        """The weak view: files, sizes and image-level labels (the categories present)."""
        infos = []
        for image_id, record in enumerate(self._records, start=1):
            anns = self._by_source_id[record["id"]]
            labels = tuple(sorted({self._class_index[a["category_id"]] for a in anns}))
            path = inside(self.root, Path(self.split) / record["file_name"], "image")
            infos.append(ImageInfo(image_id, record["file_name"], path, record["width"], record["height"], labels))
        return infos

    def ground_truth(self, info: ImageInfo) -> ImageGroundTruth:
        """Instances of one image; crowd regions and ``void_segmentation`` become void pixels."""
        record = self._records[info.id - 1]
        height, width = record["height"], record["width"]
        instances, void = [], np.zeros((height, width), dtype=bool)
        if "void_segmentation" in record:  # written by `wsis convert` for VOC void pixels
            void |= _annotation_mask(record["void_segmentation"], height, width)
        for ann in self._by_source_id[record["id"]]:
            mask = _annotation_mask(ann["segmentation"], height, width)
            if ann.get("iscrowd", 0):
                void |= mask
            else:
                instances.append(InstanceMask(self._class_index[ann["category_id"]], mask))
        return ImageGroundTruth(instances, void)


CATEGORY_FIELDS = {"id": int, "name": str}
IMAGE_FIELDS = {"id": int, "file_name": str, "width": int, "height": int}


def _checked(records, what: str, fields: dict[str, type]) -> list[dict]:
    """``records`` if it is a list of objects holding ``fields`` of their types; else ValueError naming the first
    bad record and field."""
    if not isinstance(records, list):
        raise ValueError(f"{what} is not a list")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{what}[{index}] is not an object")
        for name, kind in fields.items():
            if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
                raise ValueError(f"{what}[{index}] has no {kind.__name__} {name!r}")
    return records


def _annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE → [H, W] bool (pycocotools)."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)
