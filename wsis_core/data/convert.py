"""Ground truth of a split as a COCO ground-truth dict (``wsis convert``)."""

from __future__ import annotations

from collections.abc import Callable

from wsis_core import masks
from wsis_core.data.dataset import GroundTruth


def ground_truth_to_coco(gt: GroundTruth, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """COCO dict: ``images`` (ids 1..N per the id contract, plus ``void_segmentation`` RLE where an
    image has void pixels), ``categories`` (id = class index), ``annotations`` (RLE with str counts,
    tight ``bbox`` [x, y, w, h], ``area``, ``iscrowd`` 0)."""
    images, annotations = [], []
    for index, info in enumerate(gt.images):
        truth = gt.get(index)
        record = {"id": info.id, "file_name": info.file_name, "width": info.width, "height": info.height}
        if truth.void.any():
            record["void_segmentation"] = masks.encode(truth.void)
        images.append(record)
        for instance in truth.instances:
            rle = masks.encode(instance.mask)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": info.id,
                "category_id": instance.category_id,
                "segmentation": rle,
                "bbox": masks.to_bbox(rle),
                "area": masks.area(rle),
                "iscrowd": 0,
            })
        if on_progress:
            on_progress(index + 1, len(gt.images))
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(gt.classes)]
    return {"images": images, "categories": categories, "annotations": annotations}


def ground_truth_as_results(coco: dict) -> list[dict]:
    """The ground truth as a COCO results list with score 1 (an evaluation sanity check: all 100)."""
    keys = ("image_id", "category_id", "segmentation", "bbox")
    return [{**{k: ann[k] for k in keys}, "score": 1.0} for ann in coco["annotations"]]
