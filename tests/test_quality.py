"""The quality report: a hand-made case with known numbers, agreement between rounds, and the API route on a
dataset with ground truth on its train split (VOC layout) and on one without (a tags-only folder)."""

from __future__ import annotations

import pytest

from integration import harness
from integration.review_data import rect_annotation, rect_mask, replace_round_file
from wsis_core.data.convert import write_tagged_folder
from wsis_core.data.guard import weak_supervision
from wsis_core.errors import LabelLeakError
from wsis_core.quality import agreement, ground_truth_quality, match_instances, quality_report, split_ground_truth

pytestmark = pytest.mark.usefixtures("eager_tasks")

H = W = 10
A, B = rect_mask(H, W, 0, 5, 0, 5), rect_mask(H, W, 5, 10, 5, 10)  # 25 pixels each
B_PART = rect_mask(H, W, 6, 10, 5, 10)  # 20 of B's pixels: IoU 0.8
CORNER = rect_mask(H, W, 0, 2, 8, 10)  # touches no instance


def coco(annotations: list[dict]) -> dict:
    return {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], "annotations": annotations}


TRUTH = coco([rect_annotation(1, 1, 1, A), rect_annotation(2, 1, 1, B)])
# the false positive scores highest: ranked FP, TP, TP -> precision 1/2 and 2/3 at the two hits -> AP 2/3
PSEUDO = coco([rect_annotation(1, 1, 1, A, 0.9), rect_annotation(2, 1, 1, B_PART, 0.8),
               rect_annotation(3, 1, 1, CORNER, 0.95)])


def test_ground_truth_figures_of_a_hand_made_case():
    report = ground_truth_quality(PSEUDO, TRUTH)
    assert (report["images"], report["instances"], report["pseudo_instances"]) == (1, 2, 3)
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(1.0)
    assert report["matched_iou"] == pytest.approx((1.0 + 0.8) / 2)
    assert report["mAP_r@0.5"] == pytest.approx(100 * 2 / 3)


def test_class_figures_and_agreement_with_the_previous_round():
    previous = coco([rect_annotation(1, 1, 1, A, 0.5), rect_annotation(2, 1, 1, B, 0.5),
                     rect_annotation(3, 1, 2, A, 0.5)])
    report = quality_report(PSEUDO, previous)
    cat, dog = report["classes"]
    assert (cat["instances"], cat["images"], cat["instances_per_image"]) == (3, 1, 3.0)
    assert cat["mean_score"] == pytest.approx((0.9 + 0.8 + 0.95) / 3)
    assert (dog["instances"], dog["images"], dog["mean_score"], dog["instances_per_image"]) == (0, 0, None, None)
    assert report["agreement"] == {"matched": 2, "mean_iou": pytest.approx(0.9), "added": 1, "dropped": 1,
                                   "images_changed": 1, "iou_threshold": 0.5}
    assert (report["images"], report["instances"], report["images_without_instances"]) == (1, 3, 0)
    assert report["ground_truth"] is None and quality_report(PSEUDO)["agreement"] is None


def test_matching_is_one_to_one_per_class():
    same = match_instances(TRUTH["annotations"], TRUTH["annotations"])
    assert (same.ious, same.added, same.dropped, same.change) == ([1.0, 1.0], 0, 0, 0.0)
    other_class = match_instances(TRUTH["annotations"][:1], [rect_annotation(9, 1, 2, A)])
    assert (other_class.ious, other_class.added, other_class.dropped, other_class.change) == ([], 1, 1, 1.0)
    assert agreement(coco([]), coco([]))["mean_iou"] is None


def test_ground_truth_is_out_of_reach_inside_weak_supervision(synth_dataset):
    with weak_supervision(), pytest.raises(LabelLeakError):
        split_ground_truth(synth_dataset, "train")


@pytest.fixture
def service(tmp_path, monkeypatch, synth_dataset):
    data_root = harness.data_root_with(tmp_path, synth_dataset)
    write_tagged_folder(synth_dataset, data_root / "tags", ["train", "val"], with_ground_truth=False)
    settings = harness.service_settings(monkeypatch, tmp_path, data_root)
    with harness.api_client(settings) as client:
        yield client, settings


def launch(client, path: str) -> int:
    dataset = client.post("/api/datasets", json={"name": path, "path": path}).json()
    run = client.post("/api/runs", json={"dataset_id": dataset["id"]}).json()
    round_ = client.post(f"/api/runs/{run['id']}/rounds").json()
    assert round_["status"] == "succeeded"
    return round_["id"]


def test_quality_route_with_ground_truth_on_the_train_split(service, synth_dataset):
    client, settings = service
    round_id = launch(client, "synth")
    truth = split_ground_truth(synth_dataset, "train")
    # the pseudo labels are the ground truth of the first four images, with falling scores
    kept = [{**ann, "score": 1.0 - ann["id"] / 100} for ann in truth["annotations"] if ann["image_id"] <= 4]
    labels = {"images": truth["images"], "categories": truth["categories"], "annotations": kept}
    replace_round_file(settings, round_id, "pseudo_labels", labels)
    body = client.get(f"/api/rounds/{round_id}/quality").json()
    gt = body["ground_truth"]
    assert gt["images"] == len(truth["images"]) == 8 and gt["instances"] == len(truth["annotations"])
    assert gt["precision"] == 1.0 and gt["matched_iou"] == 1.0
    assert gt["recall"] == pytest.approx(len(kept) / len(truth["annotations"]))
    assert body["instances"] == len(kept) and body["agreement"] is None and body["previous_round_id"] is None
    assert sum(row["instances"] for row in body["classes"]) == len(kept)


def test_quality_route_without_ground_truth_and_before_labels(service):
    client, _ = service
    round_id = launch(client, "tags")
    body = client.get(f"/api/rounds/{round_id}/quality").json()
    assert body["ground_truth"] is None and body["images"] == 8 and body["images_without_instances"] == 0
    run_id = client.get(f"/api/rounds/{round_id}").json()["run_id"]
    second = client.post(f"/api/runs/{run_id}/rounds").json()
    agreement_body = client.get(f"/api/rounds/{second['id']}/quality").json()["agreement"]
    assert agreement_body["added"] == agreement_body["dropped"] == 0 and agreement_body["mean_iou"] == 1.0
    assert client.get("/api/rounds/99/quality").status_code == 404
