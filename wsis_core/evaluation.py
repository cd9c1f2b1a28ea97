"""Instance segmentation metrics of the CCGR paper (AAAI 2020, section "Evaluation metrics").

Following Hariharan et al. 2014 ("Simultaneous Detection and Segmentation", SDS), CCGR reports
the VOC-style instance mAP over masks at IoU 0.25, 0.5 and 0.75 (``mAP_r``) and over boxes at
IoU 0.5 (``mAP_b``); on COCO it reports pycocotools' AP@[.5:.95] for masks and boxes.

Inputs are a COCO ground-truth dict (images may carry a ``void_segmentation`` RLE of the pixels
VOC marks void) and a COCO results list. All metrics are percentages (0-100).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wsis_core import masks
from wsis_core.errors import WsisInputError
from wsis_core.io import read_json

METRIC_KEYS = ("mAP_r@0.25", "mAP_r@0.5", "mAP_r@0.75", "mAP_b@0.5", "coco_segm_AP", "coco_bbox_AP")
MASK_THRESHOLDS = (0.25, 0.5, 0.75)
BOX_THRESHOLDS = (0.5,)


def average_precision(is_tp: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP (VOC 2010+) of detections sorted by score, descending.

    The precision curve is replaced by its monotone envelope (the best precision at any higher
    recall) and integrated over recall. Recall grows by ``1 / n_gt`` at each true positive only,
    so AP = sum over true positives of envelope / n_gt. Returns a fraction in [0, 1].
    """
    if n_gt <= 0:
        raise ValueError("average_precision needs at least one ground-truth instance")
    is_tp = np.asarray(is_tp, dtype=bool)
    if is_tp.size == 0:
        return 0.0
    precision = np.cumsum(is_tp) / np.arange(1, is_tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(envelope[is_tp].sum() / n_gt)


def class_average_precisions(
    gt: dict, results: list[dict], iou_type: str, thresholds: Sequence[float]
) -> dict[int, dict[float, float]]:
    """VOC-style AP (fraction) per class with at least one ground-truth instance, per IoU threshold.

    As in Hariharan et al. 2014: the detections of a class over all images are taken by score,
    descending (ties keep the results order), and each is a true positive when its best IoU with a
    ground-truth instance of the same image and class reaches the threshold and that instance is
    not matched yet (the VOC rule).
    ``iou_type`` is ``"segm"`` (mask IoU, void pixels ignored) or ``"bbox"`` (box IoU). The IoU
    matrix of each (image, class) is computed once and shared by all thresholds.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', not {iou_type!r}")
    gts = defaultdict(lambda: defaultdict(list))  # category_id -> image_id -> annotations
    for ann in gt["annotations"]:
        gts[ann["category_id"]][ann["image_id"]].append(ann)
    dets = defaultdict(lambda: defaultdict(list))  # category_id -> image_id -> (index, result)
    for index, det in enumerate(results):
        dets[det["category_id"]][det["image_id"]].append((index, det))
    valid = _valid_regions(gt) if iou_type == "segm" else {}

    per_class = {}
    for category_id in sorted(gts):
        indices, scores, is_tp = [], [], {t: [] for t in thresholds}
        for image_id, image_dets in dets[category_id].items():
            image_dets = sorted(image_dets, key=lambda d: -d[1]["score"])  # stable: ties keep order
            ious = _iou_matrix(
                [d for _, d in image_dets], gts[category_id][image_id], iou_type, valid.get(image_id)
            )
            for t in thresholds:
                is_tp[t] += list(_greedy_match(ious, t))
            indices += [i for i, _ in image_dets]
            scores += [d["score"] for _, d in image_dets]
        order = np.lexsort((indices, -np.asarray(scores, dtype=float)))
        n_gt = sum(len(anns) for anns in gts[category_id].values())
        per_class[category_id] = {
            t: average_precision(np.asarray(is_tp[t], dtype=bool)[order], n_gt) for t in thresholds
        }
    return per_class


def instance_map(
    gt: dict, results: list[dict], iou_type: str, thresholds: Sequence[float]
) -> dict[float, float]:
    """Mean over classes with ground truth of :func:`class_average_precisions`, in percent."""
    per_class = class_average_precisions(gt, results, iou_type, thresholds)
    return {t: 100.0 * float(np.mean([aps[t] for aps in per_class.values()])) for t in thresholds}


def label_set_quality(gt: dict, results: list[dict], iou_type: str, threshold: float = 0.5) -> dict[str, float]:
    """A set of labels (pseudo masks, MIL or CCGR boxes) against the ground truth as a label set, not a ranking.

    Per image and class, the results taken by score are matched one to one to instances by the VOC rule of
    :func:`class_average_precisions` (mask IoU without void pixels, or box IoU) at ``threshold``. Returns
    ``precision`` (matched results / results), ``recall`` (matched instances / instances), ``matched_iou``
    (mean IoU of the matched pairs; ``nan`` when none) and the counts ``results`` and ``instances``.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', not {iou_type!r}")
    gts, dets = defaultdict(list), defaultdict(list)
    for ann in gt["annotations"]:
        gts[ann["image_id"], ann["category_id"]].append(ann)
    for det in results:
        dets[det["image_id"], det["category_id"]].append(det)
    valid = _valid_regions(gt) if iou_type == "segm" else {}
    matched_ious = []
    for key, key_dets in dets.items():
        key_dets = sorted(key_dets, key=lambda d: -d["score"])
        ious = _iou_matrix(key_dets, gts.get(key, []), iou_type, valid.get(key[0]))
        is_tp = _greedy_match(ious, threshold)
        matched_ious += ious[is_tp].max(axis=1).tolist() if is_tp.any() else []
    n_results, n_gt = len(results), len(gt["annotations"])
    return {
        "precision": len(matched_ious) / n_results if n_results else float("nan"),
        "recall": len(matched_ious) / n_gt if n_gt else float("nan"),
        "matched_iou": float(np.mean(matched_ious)) if matched_ious else float("nan"),
        "results": n_results, "instances": n_gt,
    }


def evaluate(
    gt: dict, results: list[dict], *, gt_name: str = "ground truth", results_name: str = "results"
) -> dict[str, float | None]:
    """All metrics of CCGR's "Evaluation metrics" section, keyed by :data:`METRIC_KEYS`.

    Mask metrics (``mAP_r@*``, ``coco_segm_AP``) are ``None`` when no result has a segmentation.
    COCO APs use pycocotools' defaults (at most 100 detections per image) and do not know void.
    ``gt_name`` and ``results_name`` name the inputs in :class:`WsisInputError` messages.
    """
    _check_gt(gt, gt_name)
    has_masks = _check_results(results, gt, results_name)
    box_map = instance_map(gt, results, "bbox", BOX_THRESHOLDS)
    metrics = dict.fromkeys(METRIC_KEYS)
    metrics["mAP_b@0.5"] = box_map[0.5]
    metrics["coco_bbox_AP"] = _coco_ap(gt, results, "bbox")
    if has_masks:
        mask_map = instance_map(gt, results, "segm", MASK_THRESHOLDS)
        for t in MASK_THRESHOLDS:
            metrics[f"mAP_r@{t}"] = mask_map[t]
        metrics["coco_segm_AP"] = _coco_ap(gt, results, "segm")
    return metrics


def evaluate_files(gt_path: str | Path, results_path: str | Path) -> dict[str, float | None]:
    """:func:`evaluate` on a COCO ground-truth JSON file and a COCO results JSON file.

    The results file is a list of results or a dict whose ``annotations`` are that list.
    """
    gt = read_json(gt_path)
    results = read_json(results_path)
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    return evaluate(gt, results, gt_name=str(gt_path), results_name=str(results_path))


def _greedy_match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """True-positive flags of detections (rows, by score) against ground truth (columns), VOC rule:
    a detection is a TP when its best-overlapping instance reaches ``threshold`` and is not yet
    matched; a detection whose best instance is taken is a false positive (a duplicate)."""
    matched = np.zeros(ious.shape[1], dtype=bool)
    is_tp = np.zeros(ious.shape[0], dtype=bool)
    if ious.shape[1] == 0:
        return is_tp
    for d, best in enumerate(ious.argmax(axis=1)):
        if ious[d, best] >= threshold and not matched[best]:
            matched[best] = True
            is_tp[d] = True
    return is_tp


def _iou_matrix(dets: list[dict], gts: list[dict], iou_type: str, valid: dict | None) -> np.ndarray:
    """[len(dets), len(gts)] IoU of masks (restricted to the ``valid`` RLE when given) or boxes."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    if iou_type == "bbox":
        d = np.asarray([x["bbox"] for x in dets], dtype=float)
        g = np.asarray([x["bbox"] for x in gts], dtype=float)
    else:
        d = [_restrict(x["segmentation"], valid) for x in dets]
        g = [_restrict(x["segmentation"], valid) for x in gts]
    return np.asarray(mask_utils.iou(d, g, [0] * len(gts)), dtype=float).reshape(len(dets), len(gts))


def _restrict(rle: dict, valid: dict | None) -> dict:
    return rle if valid is None else mask_utils.merge([rle, valid], intersect=True)


def _valid_regions(gt: dict) -> dict[int, dict]:
    """RLE of the non-void pixels of each image that has a ``void_segmentation``."""
    return {
        image["id"]: masks.encode(~masks.decode(image["void_segmentation"]))
        for image in gt["images"]
        if image.get("void_segmentation") is not None
    }


def _coco_ap(gt: dict, results: list[dict], iou_type: str) -> float:
    """pycocotools COCOeval AP@[.5:.95] (``stats[0]``) in percent; 0 without results."""
    if not results:
        return 0.0
    field = "segmentation" if iou_type == "segm" else "bbox"
    # Copies: COCO.loadRes and COCOeval write fields (id, area, ignore) into the annotations.
    dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    dets = [{k: r[k] for k in ("image_id", "category_id", "score", field)} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    # COCOeval divides by (tp + fp + eps), so a perfect AP comes out as 0.99999999999999978.
    return round(100.0 * float(coco_eval.stats[0]), 10)


def _check_gt(gt, name: str) -> None:
    """A COCO ground truth as `wsis convert` writes it, with at least one instance."""
    if not isinstance(gt, dict):
        raise WsisInputError(f"{name}: expected a COCO ground-truth object")
    for key in ("images", "categories", "annotations"):
        if not isinstance(gt.get(key), list):
            raise WsisInputError(f"{name}: missing list '{key}'")
    if not gt["annotations"]:
        raise WsisInputError(f"{name}: no ground-truth instances to evaluate against")
    sizes = {image["id"]: [image["height"], image["width"]] for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    for index, ann in enumerate(gt["annotations"]):
        where = f"{name}: annotation {index}"
        _require(ann, ("image_id", "category_id", "bbox", "segmentation"), where)
        _check_ids(ann, sizes, category_ids, where)
        _check_bbox(ann["bbox"], where)
        _check_rle(ann["segmentation"], sizes[ann["image_id"]], where)


def _check_results(results, gt: dict, name: str) -> bool:
    """Validate a COCO results list; True when its results carry masks (all of them or none)."""
    if not isinstance(results, list):
        raise WsisInputError(f"{name}: expected a list of results (or a dict with 'annotations')")
    sizes = {image["id"]: [image["height"], image["width"]] for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    with_masks = 0
    for index, entry in enumerate(results):
        where = f"{name}: result {index}"
        _require(entry, ("image_id", "category_id", "score", "bbox"), where)
        _check_ids(entry, sizes, category_ids, where)
        _check_bbox(entry["bbox"], where)
        if not _is_number(entry["score"]):
            raise WsisInputError(f"{where} has a score that is not a finite number")
        if "segmentation" in entry:
            _check_rle(entry["segmentation"], sizes[entry["image_id"]], where)
            with_masks += 1
    if 0 < with_masks < len(results):
        raise WsisInputError(f"{name}: {with_masks} of {len(results)} results have a segmentation (all or none)")
    return with_masks > 0


def _require(entry, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise WsisInputError(f"{where} is not an object")
    for key in keys:
        if key not in entry:
            raise WsisInputError(f"{where} has no {key}")


def _check_ids(entry: dict, sizes: dict, category_ids: set, where: str) -> None:
    if entry["image_id"] not in sizes:
        raise WsisInputError(f"{where} has unknown image_id {entry['image_id']}")
    if entry["category_id"] not in category_ids:
        raise WsisInputError(f"{where} has unknown category_id {entry['category_id']}")


def _check_bbox(bbox, where: str) -> None:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox) and min(bbox[2:]) >= 0):
        raise WsisInputError(f"{where} has a bbox that is not [x, y, w, h] with w, h >= 0")


def _check_rle(rle, size: list, where: str) -> None:
    if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str) and rle.get("size") == size):
        raise WsisInputError(f"{where} has a segmentation that is not an RLE with str counts and size {size}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
