"""Metrics of wsis_core.evaluation on hand-made 20x20 cases whose values are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wsis_core import masks
from wsis_core.errors import WsisInputError
from wsis_core.evaluation import (
    METRIC_KEYS,
    _iou_matrix,
    average_precision,
    class_average_precisions,
    evaluate,
    evaluate_files,
    instance_map,
    label_set_quality,
)

H = W = 20


def box_mask(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """Boolean mask of rows y0..y1-1 and columns x0..x1-1."""
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def make_gt(instances, n_images=1, n_categories=3, voids=None) -> dict:
    """COCO ground truth from (image_id, category_id, mask) triples; ``voids`` maps image_id -> mask."""
    voids = voids or {}
    images = []
    for image_id in range(1, n_images + 1):
        image = {"id": image_id, "file_name": f"{image_id}.jpg", "width": W, "height": H}
        if image_id in voids:
            image["void_segmentation"] = masks.encode(voids[image_id])
        images.append(image)
    annotations = [
        {
            "id": i,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": masks.encode(mask),
            "bbox": masks.to_bbox(masks.encode(mask)),
            "area": int(mask.sum()),
            "iscrowd": 0,
        }
        for i, (image_id, category_id, mask) in enumerate(instances, start=1)
    ]
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_categories + 1)]
    return {"images": images, "categories": categories, "annotations": annotations}


def result(image_id: int, category_id: int, mask: np.ndarray, score: float, with_mask=True) -> dict:
    rle = masks.encode(mask)
    det = {"image_id": image_id, "category_id": category_id, "score": score, "bbox": masks.to_bbox(rle)}
    if with_mask:
        det["segmentation"] = rle
    return det


A = box_mask(2, 2, 10, 10)  # 64 pixels
B = box_mask(12, 12, 18, 18)  # 36 pixels, disjoint from A
ELSEWHERE = box_mask(0, 14, 4, 20)  # disjoint from A and B


def test_average_precision_by_hand():
    assert average_precision(np.array([False, True]), 1) == 0.5
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.array([True]), 2) == 0.5
    assert average_precision(np.array([], dtype=bool), 3) == 0.0


def test_perfect_predictions_score_100_everywhere():
    gt = make_gt([(1, 1, A), (1, 2, B), (2, 1, B), (2, 3, ELSEWHERE)], n_images=2)
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
         "bbox": a["bbox"], "segmentation": a["segmentation"]}
        for a in gt["annotations"]
    ]
    metrics = evaluate(gt, results)
    assert tuple(metrics) == METRIC_KEYS
    assert metrics == dict.fromkeys(METRIC_KEYS, 100.0)


def test_false_positive_before_true_positive_halves_ap():
    gt = make_gt([(1, 1, A)])
    metrics = evaluate(gt, [result(1, 1, B, 0.9), result(1, 1, A, 0.8)])
    # precision 0 then 1/2 at recall 1: AP = 1 x 1/2, for masks, boxes and (101-point) COCO alike
    assert metrics == dict.fromkeys(METRIC_KEYS, 50.0)


def test_tp_fp_tp_with_two_ground_truths():
    gt = make_gt([(1, 1, A), (1, 1, B)])
    metrics = evaluate(gt, [result(1, 1, A, 0.9), result(1, 1, ELSEWHERE, 0.8), result(1, 1, B, 0.7)])
    expected = 100 * (0.5 * 1 + 0.5 * 2 / 3)  # 83.333...
    for key in ("mAP_r@0.25", "mAP_r@0.5", "mAP_r@0.75", "mAP_b@0.5"):
        assert metrics[key] == pytest.approx(expected)


def test_detections_ranked_across_images_by_score():
    gt = make_gt([(1, 1, A), (2, 1, A)], n_images=2)
    # the FP of image 2 (0.9) ranks before the TP of image 1 (0.8): TP(0.95), FP, TP -> 83.33
    results = [result(1, 1, A, 0.8), result(2, 1, B, 0.9), result(2, 1, A, 0.95)]
    assert instance_map(gt, results, "segm", [0.5]) == {0.5: pytest.approx(250 / 3)}


def test_void_pixels_are_ignored():
    void = box_mask(2, 10, 10, 14)  # 32 pixels right of A
    prediction = A | void  # A plus pixels in the void only
    gt = make_gt([(1, 1, A)], voids={1: void})
    assert instance_map(gt, [result(1, 1, prediction, 0.9)], "segm", [0.75]) == {0.75: 100.0}

    # the same extra pixels without void: IoU = 64 / 96 = 2/3
    gt = make_gt([(1, 1, A)], voids={1: box_mask(15, 0, 20, 5)})
    maps = instance_map(gt, [result(1, 1, prediction, 0.9)], "segm", [0.5, 2 / 3 - 1e-9, 2 / 3 + 1e-9, 0.75])
    assert maps == {0.5: 100.0, 2 / 3 - 1e-9: 100.0, 2 / 3 + 1e-9: 0.0, 0.75: 0.0}

    # half of them void: IoU = 64 / (64 + 16) = 0.8
    gt = make_gt([(1, 1, A)], voids={1: box_mask(2, 10, 10, 12)})
    maps = instance_map(gt, [result(1, 1, prediction, 0.9)], "segm", [0.8 - 1e-9, 0.8 + 1e-9])
    assert maps == {0.8 - 1e-9: 100.0, 0.8 + 1e-9: 0.0}


def test_class_without_detections_counts_zero_and_class_without_gt_is_excluded():
    gt = make_gt([(1, 1, A), (1, 2, B)])  # class 3 has no ground truth
    results = [result(1, 1, A, 0.9), result(1, 3, ELSEWHERE, 0.8)]
    assert class_average_precisions(gt, results, "segm", [0.5]) == {1: {0.5: 1.0}, 2: {0.5: 0.0}}
    metrics = evaluate(gt, results)
    assert metrics["mAP_r@0.5"] == 50.0
    assert metrics["mAP_b@0.5"] == 50.0


def test_duplicate_detection_is_a_false_positive():
    gt = make_gt([(1, 1, A), (1, 1, B)])
    results = [result(1, 1, A, 0.9), result(1, 1, A, 0.8), result(1, 1, B, 0.7)]
    # TP, FP, TP: the duplicate of A overlaps no unmatched instance
    assert instance_map(gt, results, "segm", [0.25, 0.5])[0.5] == pytest.approx(250 / 3)
    assert instance_map(gt, results, "bbox", [0.5]) == {0.5: pytest.approx(250 / 3)}


def test_a_detection_whose_best_instance_is_taken_is_a_false_positive():
    left, right = box_mask(0, 0, 10, 10), box_mask(0, 10, 10, 20)  # 100 pixels each
    gt = make_gt([(1, 1, left), (1, 1, right)])
    wide = box_mask(0, 0, 10, 15)  # IoU 100/150 with left, 50/150 with right
    results = [result(1, 1, left, 0.9), result(1, 1, wide, 0.8)]
    # VOC rule: the second detection's best instance (`left`, 2/3) is taken, so it is an FP at any
    # threshold even though its IoU with `right` (1/3) passes 0.25: AP = 1/2 at both thresholds
    assert instance_map(gt, results, "segm", [0.25, 0.5]) == {0.25: 50.0, 0.5: 50.0}


def test_label_set_quality_matches_one_to_one_and_averages_matched_ious():
    wide_a = box_mask(2, 2, 10, 12)  # IoU 64/80 with A
    gt = make_gt([(1, 1, A), (1, 1, B), (1, 2, ELSEWHERE)])
    results = [result(1, 1, wide_a, 0.9), result(1, 1, A, 0.8),  # the second is a duplicate of A
               result(1, 2, B, 0.7)]  # the wrong class: B is no instance of class 2
    for iou_type in ("segm", "bbox"):
        quality = label_set_quality(gt, results, iou_type)
        assert quality["precision"] == pytest.approx(1 / 3) and quality["recall"] == pytest.approx(1 / 3)
        assert quality["matched_iou"] == pytest.approx(0.8)
        assert (quality["results"], quality["instances"]) == (3, 3)
    empty = label_set_quality(gt, [], "segm")
    assert empty["recall"] == 0 and np.isnan(empty["precision"]) and np.isnan(empty["matched_iou"])


def test_boxes_only_results_have_no_mask_metrics():
    gt = make_gt([(1, 1, A), (1, 2, B)])
    metrics = evaluate(gt, [result(1, 1, A, 0.9, with_mask=False), result(1, 2, B, 0.8, with_mask=False)])
    assert metrics == {**dict.fromkeys(METRIC_KEYS), "mAP_b@0.5": 100.0, "coco_bbox_AP": 100.0}


def test_all_wrong_and_no_predictions_score_zero():
    gt = make_gt([(1, 1, A)])
    assert evaluate(gt, [result(1, 1, B, 0.9)]) == dict.fromkeys(METRIC_KEYS, 0.0)
    assert evaluate(gt, []) == {**dict.fromkeys(METRIC_KEYS), "mAP_b@0.5": 0.0, "coco_bbox_AP": 0.0}


def test_mask_iou_matches_pycocotools_and_numpy():
    rng = np.random.default_rng(0)
    dets = [rng.random((H, W)) < 0.4 for _ in range(3)]
    gts = [rng.random((H, W)) < 0.4 for _ in range(2)]
    void = rng.random((H, W)) < 0.3
    det_anns = [{"segmentation": masks.encode(m)} for m in dets]
    gt_anns = [{"segmentation": masks.encode(m)} for m in gts]

    ious = _iou_matrix(det_anns, gt_anns, "segm", None)
    reference = mask_utils.iou([d["segmentation"] for d in det_anns], [g["segmentation"] for g in gt_anns], [0, 0])
    np.testing.assert_allclose(ious, reference)

    valid = ~void
    ious = _iou_matrix(det_anns, gt_anns, "segm", masks.encode(valid))
    expected = [[(d & g & valid).sum() / ((d | g) & valid).sum() for g in gts] for d in dets]
    np.testing.assert_allclose(ious, expected)


def test_box_iou_by_hand():
    # [0,0,10,10] vs [5,0,10,10]: intersection 50, union 150
    ious = _iou_matrix([{"bbox": [0, 0, 10, 10]}], [{"bbox": [5, 0, 10, 10]}], "bbox", None)
    np.testing.assert_allclose(ious, [[1 / 3]])


def test_some_but_not_all_results_with_masks_is_an_error():
    gt = make_gt([(1, 1, A)])
    with pytest.raises(WsisInputError, match="1 of 2 results"):
        evaluate(gt, [result(1, 1, A, 0.9), result(1, 1, B, 0.8, with_mask=False)])


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(make_gt([(1, 1, A)])))
    return path


def test_evaluate_files_accepts_a_list_or_a_coco_dict(gt_file, tmp_path):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([result(1, 1, A, 0.9)]))
    assert evaluate_files(gt_file, preds) == dict.fromkeys(METRIC_KEYS, 100.0)
    preds.write_text(json.dumps({"annotations": [result(1, 1, B, 0.9), result(1, 1, A, 0.8)]}))
    assert evaluate_files(gt_file, preds)["mAP_r@0.5"] == 50.0


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "file not found"),
        ("{not json", "not valid JSON"),
        (json.dumps([result(99, 1, A, 0.9)]), "unknown image_id 99"),
        (json.dumps([result(1, 7, A, 0.9)]), "unknown category_id 7"),
        (json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]), "no score"),
        (json.dumps([{"image_id": 1, "category_id": 1, "score": 0.5}]), "no bbox"),
        (json.dumps({"images": []}), "expected a list"),
    ],
)
def test_evaluate_files_errors_name_the_file(gt_file, tmp_path, content, problem):
    preds = tmp_path / "preds.json"
    if content is not None:
        preds.write_text(content)
    with pytest.raises(WsisInputError) as error:
        evaluate_files(gt_file, preds)
    assert "preds.json" in str(error.value) and problem in str(error.value)
    assert "\n" not in str(error.value)


def test_evaluate_files_bad_ground_truth_names_the_file(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [], "categories": []}))
    preds = tmp_path / "preds.json"
    preds.write_text("[]")
    with pytest.raises(WsisInputError, match="gt.json: missing list 'annotations'"):
        evaluate_files(gt, preds)
