"""Pseudo instance labels from score maps and boxes: cropping, overlap resolution, COCO output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsis_core import masks
from wsis_core.pseudo_labels import (
    box_masks,
    crop_instances,
    make_instance_labels,
    semantic_label_from_instances,
    to_coco_annotations,
)


def _two_class_map(height=20, width=30):
    """Background 0.9 everywhere; class 1 wins on columns 2..11, class 2 on columns 15..24 (rows 5..14)."""
    scores = torch.zeros(3, height, width)
    scores[0] = 0.9
    scores[1, 5:15, 2:12] = 0.95
    scores[2, 5:15, 15:25] = 0.97
    return scores / scores.sum(0, keepdim=True)


def test_box_masks_use_pixel_centres():
    mask = box_masks(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 6, 6)[0]
    assert mask.sum() == 4 and mask[2:4, 1:3].all()
    assert not box_masks(torch.tensor([[1.6, 2.0, 2.4, 4.0]]), 6, 6).any()


def test_crop_keeps_the_class_argmax_inside_the_box():
    scores = _two_class_map()
    boxes = torch.tensor([[0.0, 0.0, 14.0, 20.0], [13.0, 0.0, 30.0, 20.0]])
    result = crop_instances(scores, boxes, torch.tensor([1, 2]))
    assert result[0].sum() == 100 and result[0, 5:15, 2:12].all()
    assert result[1].sum() == 100 and result[1, 5:15, 15:25].all()
    thresholded = crop_instances(scores, boxes, torch.tensor([1, 2]), mode="threshold", threshold=0.99)
    assert not thresholded.any()


def test_overlapping_same_class_boxes_split_pixels_to_the_smaller_box():
    scores = _two_class_map()
    big, small = [0.0, 0.0, 14.0, 20.0], [6.0, 5.0, 12.0, 15.0]
    result = crop_instances(scores, torch.tensor([big, small]), torch.tensor([1, 1]))
    assert not (result[0] & result[1]).any()
    assert result[1].sum() == 60 and result[0].sum() == 40


def test_labels_drop_empty_instances_and_write_coco():
    scores = _two_class_map()
    boxes = torch.tensor([[0.0, 0.0, 14.0, 20.0], [26.0, 0.0, 30.0, 4.0]])
    instances = make_instance_labels(scores, boxes, torch.tensor([1, 2]), torch.tensor([0.8, 0.7]))
    assert len(instances) == 1
    (ann,) = to_coco_annotations(7, instances, first_id=3)
    assert ann["id"] == 3 and ann["image_id"] == 7 and ann["category_id"] == 1
    assert ann["bbox"] == [0.0, 0.0, 14.0, 20.0] and ann["score"] == pytest.approx(0.8)
    assert np.array_equal(masks.decode(ann["segmentation"]), instances[0].mask) and ann["area"] == 100
    semantic = semantic_label_from_instances([(i.category_id, i.mask) for i in instances], 20, 30)
    assert set(np.unique(semantic)) == {0, 1} and (semantic == 1).sum() == 100


def test_coco_box_is_the_refined_box_or_the_mask_extent():
    instances = make_instance_labels(_two_class_map(), torch.tensor([[0.0, 0.0, 14.0, 20.0]]), torch.tensor([1]),
                                     torch.tensor([0.8]))
    (refined,) = to_coco_annotations(1, instances, box="refined")
    (extent,) = to_coco_annotations(1, instances, box="mask")
    assert refined["bbox"] == [0.0, 0.0, 14.0, 20.0]
    assert extent["bbox"] == [2.0, 5.0, 10.0, 10.0]  # class 1 wins rows 5..14, columns 2..11 of the box
    assert extent["segmentation"] == refined["segmentation"] and extent["area"] == refined["area"] == 100
    with pytest.raises(ValueError, match="box must be one of"):
        to_coco_annotations(1, instances, box="tight")


def _disk_image(size=48, centre=(24, 24), radius=12):
    """RGB uint8: a red disk on a noisy blue-green background, and the disk's mask."""
    rng = np.random.default_rng(0)
    image = np.empty((size, size, 3), np.uint8)
    image[...] = (30, 120, 110)
    image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[:size, :size]
    disk = (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2
    image[disk] = (200, 40, 40)
    return image, disk


def _part_scores(size, part):
    """S where class 1 wins only on ``part`` (the discriminative part), background elsewhere."""
    scores = torch.zeros(2, size, size)
    scores[0] = 0.8
    scores[1][torch.from_numpy(part)] = 0.9
    return scores


def test_grabcut_cuts_the_whole_object_out_of_a_box_where_s_covers_only_a_part():
    image, disk = _disk_image()
    part = np.zeros_like(disk)
    part[12:18, 20:28] = True
    part &= disk
    scores, box = _part_scores(48, part), torch.tensor([[10.0, 10.0, 38.0, 38.0]])
    argmax = crop_instances(scores, box, torch.tensor([1]))[0].numpy()
    cut = crop_instances(scores, box, torch.tensor([1]), mode="grabcut", image=image)[0].numpy()
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(argmax, disk) < 0.2
    assert iou(cut, disk) > 0.9
    # A cut keeping less than grabcut_min_fill of its box gives way to the argmax crop of S.
    fallback = crop_instances(scores, box, torch.tensor([1]), mode="grabcut", image=image, grabcut_min_fill=1.0)
    assert torch.equal(fallback[0], torch.from_numpy(argmax))
    with pytest.raises(ValueError, match="needs the image"):
        crop_instances(scores, box, torch.tensor([1]), mode="grabcut")


def test_grabcut_gives_an_overlap_to_the_smaller_front_box_and_labels_keep_the_masks():
    image, back = _disk_image(size=64, centre=(30, 26), radius=14)
    ys, xs = np.mgrid[:64, :64]
    front = (ys - 36) ** 2 + (xs - 44) ** 2 <= 9**2
    image[front] = (230, 220, 40)
    scores = _part_scores(64, np.zeros((64, 64), bool))
    boxes = torch.tensor([[10.0, 14.0, 42.0, 46.0], [33.0, 25.0, 56.0, 48.0]])
    result = crop_instances(scores, boxes, torch.tensor([1, 1]), mode="grabcut", image=image)
    assert not (result[0] & result[1]).any()
    overlap = torch.from_numpy(front) & box_masks(boxes, 64, 64)[0] & box_masks(boxes, 64, 64)[1]
    assert overlap.any() and not result[0][overlap].any()
    labels = make_instance_labels(scores, boxes, torch.tensor([1, 1]), torch.tensor([0.9, 0.8]), mode="grabcut",
                                  image=image)
    assert [label.mask.sum() for label in labels] == [int(result[0].sum()), int(result[1].sum())]
