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
