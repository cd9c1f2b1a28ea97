"""Ground truth of a split as a COCO ground-truth dict (``wsis convert``), and any layout as a tagged folder."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

from wsis_core import masks
from wsis_core.data import tagged
from wsis_core.data.dataset import GroundTruth, open_ground_truth, open_weak_dataset
from wsis_core.io import write_json
from wsis_core.progress import Progress


def ground_truth_to_coco(gt: GroundTruth, on_progress: Progress = None) -> dict:
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


def write_tagged_folder(data: str | Path, out: str | Path, splits: Sequence[str], *, with_ground_truth: bool) -> Path:
    """Copy the given splits of any dataset layout into a tagged folder (``images/<split>/<file>``,
    ``labels.csv`` with a split column, ``classes.txt``) and, with ``with_ground_truth``, a
    ``ground_truth.json`` of every image that has masks. Without it the copy is tags-only data."""
    out = Path(out)
    (out / tagged.IMAGES_FOLDER).mkdir(parents=True, exist_ok=False)
    rows, gt_images, gt_annotations, classes = [], [], [], []
    for split in splits:
        weak = open_weak_dataset(data, split)
        classes = weak.classes
        for info in weak.images:
            name = f"{split}/{info.file_name}"
            (out / tagged.IMAGES_FOLDER / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(info.path, out / tagged.IMAGES_FOLDER / name)
            rows.append([name, tagged.LABEL_SEPARATOR.join(weak.classes[k - 1] for k in info.labels), split])
        if with_ground_truth:
            coco = ground_truth_to_coco(open_ground_truth(data, split))
            renumber = {}
            for image in coco["images"]:
                renumber[image["id"]] = len(gt_images) + 1
                gt_images.append({**image, "id": renumber[image["id"]], "file_name": f"{split}/{image['file_name']}"})
            for ann in coco["annotations"]:
                gt_annotations.append({**ann, "id": len(gt_annotations) + 1, "image_id": renumber[ann["image_id"]]})
    with open(out / tagged.LABELS_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels", "split"])
        writer.writerows(rows)
    (out / tagged.CLASSES_FILE).write_text("".join(f"{name}\n" for name in classes))
    if with_ground_truth:
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
        write_json(out / tagged.GROUND_TRUTH_FILE, {"images": gt_images, "categories": categories, "annotations": gt_annotations})
    return out
