"""Quality of a round's pseudo labels: per-class counts and scores, agreement with the previous round, and,
where the train split has ground truth, precision / recall / IoU / mAP_r@0.5 against it.

The report reads COCO pseudo-label files (``pseudo_labels.json``) and, for the ground-truth part, the train
split's ground truth through :func:`wsis_core.data.dataset.open_ground_truth`. That reader refuses to run
inside ``weak_supervision()``: the report is for people (the API, benchmarks), never an input of training.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth
from wsis_core.data.guard import GROUND_TRUTH_FILES, GROUND_TRUTH_FOLDERS
from wsis_core.evaluation import instance_map, label_set_quality

MATCH_IOU = 0.5  # an instance of one round "is" an instance of the other at this mask IoU (same image and class)
GROUND_TRUTH_SOURCES = (*GROUND_TRUTH_FILES, *GROUND_TRUTH_FOLDERS, "annotations")


@dataclass(frozen=True)
class Matching:
    """Instances of two label sets of one image matched one to one (same class, mask IoU >= threshold)."""

    ious: list[float]  # IoU of each matched pair
    added: int  # instances of the current set left unmatched
    dropped: int  # instances of the previous set left unmatched

    @property
    def change(self) -> float:
        """0 (the same instances, same masks) to 1 (nothing in common): 1 - sum of matched IoUs / larger count."""
        larger = len(self.ious) + max(self.added, self.dropped)
        return 0.0 if larger == 0 else 1.0 - sum(self.ious) / larger


def by_image(annotations: Sequence[dict]) -> dict[int, list[dict]]:
    grouped = defaultdict(list)
    for ann in annotations:
        grouped[ann["image_id"]].append(ann)
    return grouped


def match_instances(previous: Sequence[dict], current: Sequence[dict], threshold: float = MATCH_IOU) -> Matching:
    """Greedy one-to-one matching, highest IoU first, of two annotation lists of one image, class by class."""
    ious: list[float] = []
    for category in {ann["category_id"] for ann in (*previous, *current)}:
        old = [ann["segmentation"] for ann in previous if ann["category_id"] == category]
        new = [ann["segmentation"] for ann in current if ann["category_id"] == category]
        if not old or not new:
            continue
        matrix = np.asarray(mask_utils.iou(new, old, [0] * len(old)), dtype=float).reshape(len(new), len(old))
        used_new, used_old = set(), set()
        for flat in np.argsort(-matrix, axis=None, kind="stable"):
            row, column = divmod(int(flat), len(old))
            if matrix[row, column] < threshold:
                break
            if row not in used_new and column not in used_old:
                used_new.add(row)
                used_old.add(column)
                ious.append(float(matrix[row, column]))
    return Matching(ious, len(current) - len(ious), len(previous) - len(ious))


def class_summary(labels: dict) -> list[dict]:
    """Per class of ``labels``' categories: ``instances``, ``images`` (with at least one), ``mean_score``
    (None without scores) and ``instances_per_image`` (over the images that have the class)."""
    per_class = defaultdict(list)
    for ann in labels["annotations"]:
        per_class[ann["category_id"]].append(ann)
    rows = []
    for category in labels["categories"]:
        anns = per_class.get(category["id"], [])
        images = len({ann["image_id"] for ann in anns})
        scores = [ann["score"] for ann in anns if ann.get("score") is not None]
        rows.append({
            "category_id": category["id"], "class": category["name"], "instances": len(anns), "images": images,
            "mean_score": float(np.mean(scores)) if scores else None,
            "instances_per_image": len(anns) / images if images else None,
        })
    return rows


def agreement(previous: dict, current: dict, threshold: float = MATCH_IOU) -> dict:
    """How round k's labels agree with round k-1's on the same images: ``matched`` pairs (same class, mask
    IoU >= ``threshold``), their ``mean_iou`` (None when none matched), instances ``added`` and ``dropped``,
    and ``images_changed`` (images whose instances are not all matched)."""
    old, new = by_image(previous["annotations"]), by_image(current["annotations"])
    ious, added, dropped, changed = [], 0, 0, 0
    for image in current["images"]:
        matching = match_instances(old.get(image["id"], []), new.get(image["id"], []), threshold)
        ious += matching.ious
        added += matching.added
        dropped += matching.dropped
        changed += bool(matching.added or matching.dropped)
    return {"matched": len(ious), "mean_iou": float(np.mean(ious)) if ious else None, "added": added,
            "dropped": dropped, "images_changed": changed, "iou_threshold": threshold}


def ground_truth_quality(labels: dict, truth: dict, threshold: float = MATCH_IOU) -> dict | None:
    """The pseudo labels of the images that have ground truth against it: ``precision`` and ``recall`` at mask
    IoU ``threshold`` (one-to-one, VOC rule), ``matched_iou`` (mean IoU of the matched pairs), ``mAP_r@0.5``
    (pseudo labels ranked by score; a label without a score counts as 1) and the number of ``images``;
    None when no image of ``truth`` has an instance."""
    if not truth["annotations"]:
        return None
    covered = {image["id"] for image in truth["images"]}
    results = [{**ann, "score": ann.get("score", 1.0)} for ann in labels["annotations"] if ann["image_id"] in covered]
    quality = label_set_quality(truth, results, "segm", threshold)
    return {
        "images": len(covered), "instances": quality["instances"], "pseudo_instances": quality["results"],
        "precision": _finite(quality["precision"]), "recall": _finite(quality["recall"]),
        "matched_iou": _finite(quality["matched_iou"]),
        "mAP_r@0.5": instance_map(truth, results, "segm", (0.5,))[0.5], "iou_threshold": threshold,
    }


def quality_report(labels: dict, previous: dict | None = None, truth: dict | None = None) -> dict:
    """The whole report of one round: ``images``, ``instances``, ``images_without_instances``, ``classes``
    (:func:`class_summary`), ``agreement`` with the previous round (None in round 1) and ``ground_truth``
    (:func:`ground_truth_quality`; None without ground truth on the train split)."""
    with_instances = {ann["image_id"] for ann in labels["annotations"]}
    return {
        "images": len(labels["images"]), "instances": len(labels["annotations"]),
        "images_without_instances": sum(image["id"] not in with_instances for image in labels["images"]),
        "classes": class_summary(labels),
        "agreement": agreement(previous, labels) if previous is not None else None,
        "ground_truth": ground_truth_quality(labels, truth) if truth is not None else None,
    }


def split_ground_truth(data: str | Path, split: str) -> dict:
    """COCO ground truth of the images of ``split`` that have it (report code paths only; see the module doc)."""
    return ground_truth_to_coco(open_ground_truth(data, split))


def ground_truth_fingerprint(data: str | Path) -> tuple:
    """What changes when a dataset's ground truth changes: size and modification time of its ground-truth
    file (tagged folder), mask folders (VOC) and annotation files (COCO)."""
    root = Path(data)
    found = []
    for name in GROUND_TRUTH_SOURCES:
        path = root / name
        paths = [path, *sorted(path.glob("*.json"))] if path.is_dir() else [path] if path.exists() else []
        found += [(p.relative_to(root).as_posix(), p.stat().st_mtime_ns, p.stat().st_size) for p in paths]
    return tuple(found)


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
