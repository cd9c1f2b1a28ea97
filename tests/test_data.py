"""Dataset readers: VOC layout (real voc-mini files), COCO layout, ids, errors, weak vs ground-truth views."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from wsis_core import masks
from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth, open_weak_dataset
from wsis_core.data.guard import weak_supervision
from wsis_core.data.voc import VOC_CLASSES
from wsis_core.errors import LabelLeakError, WsisInputError
from wsis_core.io import write_json

PERSON, BOTTLE = VOC_CLASSES.index("person") + 1, VOC_CLASSES.index("bottle") + 1


def test_voc_weak_view_reads_ids_sizes_and_labels(voc_mini):
    ds = open_weak_dataset(voc_mini, "train")
    assert ds.classes == list(VOC_CLASSES)
    assert [info.id for info in ds.images] == [1, 2]
    first = ds.images[0]
    assert first.file_name == "2011_000003.jpg"
    assert (first.width, first.height) == (500, 338)
    assert first.labels == (BOTTLE, PERSON)
    assert ds.load_image(0).shape == (338, 500, 3)


def test_voc_ground_truth_instances_and_void(voc_mini):
    gt = open_ground_truth(voc_mini, "train")
    truth = gt.get(0)
    assert sorted(i.category_id for i in truth.instances) == [BOTTLE, PERSON, PERSON]
    assert truth.void.any()
    for instance in truth.instances:
        assert instance.mask.shape == (338, 500)
        assert not (instance.mask & truth.void).any()


def test_main_lists_are_the_fallback(voc_mini, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(voc_mini, root)
    shutil.rmtree(root / "ImageSets" / "Segmentation")
    assert len(open_weak_dataset(root, "train")) == 2


def test_weak_view_exposes_no_masks_or_boxes(synth_dataset):
    ds = open_weak_dataset(synth_dataset, "train")
    reachable = {name for name in dir(ds) if not name.startswith("__")}
    assert reachable == {"classes", "images", "load_image", "root", "split"}
    assert set(type(ds.images[0]).__dataclass_fields__) == {"id", "file_name", "path", "width", "height", "labels"}


def test_weak_supervision_forbids_ground_truth(synth_dataset):
    with weak_supervision():
        ds = open_weak_dataset(synth_dataset, "train")
        for index in range(len(ds)):
            ds.load_image(index)
        with pytest.raises(LabelLeakError):
            open_ground_truth(synth_dataset, "train")
        with pytest.raises(LabelLeakError):
            (synth_dataset / "SegmentationObject" / f"{ds.images[0].path.stem}.png").open("rb")
    assert len(open_ground_truth(synth_dataset, "train")) == len(ds)


def _as_coco_layout(voc_root, tmp_path, split="train"):
    """The same split in the COCO layout: annotations/instances_<split>.json + <split>/ images."""
    root = tmp_path / "coco"
    (root / split).mkdir(parents=True)
    coco = ground_truth_to_coco(open_ground_truth(voc_root, split))
    for record in coco["images"]:
        record["id"] *= 10  # COCO ids are arbitrary; the reader renumbers them 1..N
        shutil.copy(voc_root / "JPEGImages" / record["file_name"], root / split)
    for ann in coco["annotations"]:
        ann["image_id"] *= 10
    write_json(root / "annotations" / f"instances_{split}.json", coco)
    return root


def test_coco_reader_matches_voc_reader(voc_mini, tmp_path):
    root = _as_coco_layout(voc_mini, tmp_path)
    voc_weak, coco_weak = open_weak_dataset(voc_mini, "train"), open_weak_dataset(root, "train")
    assert [(i.id, i.labels, i.width) for i in coco_weak.images] == [(i.id, i.labels, i.width) for i in voc_weak.images]
    assert coco_weak.load_image(1).shape == voc_weak.load_image(1).shape
    voc_truth, coco_truth = open_ground_truth(voc_mini, "train").get(1), open_ground_truth(root, "train").get(1)
    assert np.array_equal(voc_truth.void, coco_truth.void)
    for a, b in zip(voc_truth.instances, coco_truth.instances, strict=True):
        assert a.category_id == b.category_id and np.array_equal(a.mask, b.mask)


def test_coco_crowd_annotations_become_void(voc_mini, tmp_path):
    root = _as_coco_layout(voc_mini, tmp_path)
    path = root / "annotations" / "instances_train.json"
    coco = __import__("json").loads(path.read_text())
    coco["annotations"][0]["iscrowd"] = 1
    write_json(path, coco)
    truth = open_ground_truth(root, "train").get(0)
    assert len(truth.instances) == 2
    assert truth.void[masks.decode(coco["annotations"][0]["segmentation"])].all()


def test_convert_writes_coco_ground_truth(voc_mini):
    coco = ground_truth_to_coco(open_ground_truth(voc_mini, "val"))
    assert coco["images"][0]["id"] == 1 and {"id", "file_name", "width", "height"} <= set(coco["images"][0])
    assert coco["categories"][0] == {"id": 1, "name": "aeroplane"}
    ann = coco["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str)
    assert ann["iscrowd"] == 0 and ann["area"] == masks.area(ann["segmentation"]) > 0
    x, y, w, h = ann["bbox"]
    ys, xs = np.nonzero(masks.decode(ann["segmentation"]))
    assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


@pytest.mark.parametrize(
    "break_dataset, message",
    [
        (lambda root: shutil.rmtree(root), "dataset folder not found"),
        (lambda root: (root / "JPEGImages" / "2011_000003.jpg").write_bytes(b"not a jpeg"), "corrupt"),
        (lambda root: (root / "Annotations" / "2011_000003.xml").write_text(
            "<annotation><object><name>unicorn</name></object></annotation>"), "unknown class name 'unicorn'"),
        (lambda root: (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n"), "is empty"),
        (lambda root: (root / "ImageSets" / "Segmentation" / "train.txt").unlink(), None),
    ],
)
def test_bad_datasets_raise_one_line_errors(voc_mini, tmp_path, break_dataset, message):
    root = tmp_path / "voc"
    shutil.copytree(voc_mini, root)
    break_dataset(root)
    if message is None:  # the Main list still serves the split
        assert len(open_weak_dataset(root, "train")) == 2
        return
    with pytest.raises(WsisInputError) as err:
        open_weak_dataset(root, "train")
    assert message in str(err.value) and "\n" not in str(err.value)
