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
        try:
            data = json.loads(path.read_text())
            categories = sorted(data["categories"], key=lambda c: c["id"])
            self.classes = [c["name"] for c in categories]
            self._class_index = {c["id"]: i + 1 for i, c in enumerate(categories)}
            records = data["images"]
            annotations = data.get("annotations", [])
        except FileNotFoundError:
            raise WsisInputError(f"{path}: instances file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WsisInputError(f"{path}: not valid JSON ({exc})") from None
        except (KeyError, TypeError) as exc:
            raise WsisInputError(f"{path}: not a COCO instances file (missing {exc})") from None
        if not records:
            raise WsisInputError(f"{path}: split '{split}' has no images")
        self.path = path
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
            path = self.image_folder / record["file_name"]
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
