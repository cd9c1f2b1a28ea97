"""Tags-only data: the tagged-folder layout, COCO without masks, ground truth for some images only."""

from __future__ import annotations

import json
import shutil

import pytest

from wsis_core.cli import main
from wsis_core.data.convert import ground_truth_to_coco, write_tagged_folder
from wsis_core.data.dataset import (
    dataset_splits,
    detect_layout,
    open_ground_truth,
    open_image_folder,
    open_weak_dataset,
    summarize_split,
)
from wsis_core.data.guard import weak_supervision
from wsis_core.errors import LabelLeakError, WsisInputError


@pytest.fixture(scope="module")
def tags_only(synth_dataset, tmp_path_factory):
    return write_tagged_folder(synth_dataset, tmp_path_factory.mktemp("tagged") / "tags", ["train", "val"],
                               with_ground_truth=False)


@pytest.fixture(scope="module")
def tagged_with_truth(synth_dataset, tmp_path_factory):
    return write_tagged_folder(synth_dataset, tmp_path_factory.mktemp("tagged") / "truth", ["train", "val"],
                               with_ground_truth=True)


def _write(root, rows: str, classes: str | None = None, images=("a.jpg", "sub/b.png")):
    from PIL import Image

    for name in images:
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(root / "images" / name)
    (root / "labels.csv").write_text(rows)
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def test_tagged_folder_has_the_images_and_labels_of_its_source(synth_dataset, tags_only):
    assert detect_layout(tags_only) == "tagged"
    assert dataset_splits(tags_only) == ["train", "val"]
    for split in ("train", "val"):
        source, copy = open_weak_dataset(synth_dataset, split), open_weak_dataset(tags_only, split)
        assert copy.classes == source.classes
        assert [(i.id, i.labels, i.width, i.height) for i in copy.images] == \
            [(i.id, i.labels, i.width, i.height) for i in source.images]
        assert copy.images[0].file_name == f"{split}/{source.images[0].file_name}"
        assert (copy.load_image(0) == source.load_image(0)).all()


def test_tags_only_folder_reports_no_ground_truth(tags_only):
    assert summarize_split(tags_only, "val").to_dict() == {"images": 4, "with_ground_truth": 0, "ground_truth": False}
    assert not open_ground_truth(tags_only, "val").images
    assert main(["convert", "--data", str(tags_only), "--split", "val", "--out", str(tags_only / "gt.json")]) == 2
    assert not (tags_only / "gt.json").exists()


def test_ground_truth_json_gives_the_same_ground_truth_as_the_source(synth_dataset, tagged_with_truth):
    source = ground_truth_to_coco(open_ground_truth(synth_dataset, "val"))
    copy = ground_truth_to_coco(open_ground_truth(tagged_with_truth, "val"))
    assert [a["segmentation"] for a in copy["annotations"]] == [a["segmentation"] for a in source["annotations"]]
    assert [a["image_id"] for a in copy["annotations"]] == [a["image_id"] for a in source["annotations"]]


def test_ground_truth_for_some_images_only(tagged_with_truth, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tagged_with_truth, root)
    truth = json.loads((root / "ground_truth.json").read_text())
    kept = [image for image in truth["images"] if image["file_name"].startswith("val/")][:2]
    kept_ids = {image["id"] for image in kept}
    truth["images"] = kept
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in kept_ids]
    (root / "ground_truth.json").write_text(json.dumps(truth))
    assert summarize_split(root, "val").to_dict() == {"images": 4, "with_ground_truth": 2, "ground_truth": True}
    assert [image["id"] for image in ground_truth_to_coco(open_ground_truth(root, "val"))["images"]] == [1, 2]


def test_weak_supervision_cannot_open_ground_truth_json(tagged_with_truth):
    with weak_supervision():
        open_weak_dataset(tagged_with_truth, "train")  # the weak view never touches it
        with pytest.raises(LabelLeakError):
            open(tagged_with_truth / "ground_truth.json").close()


def test_without_split_column_every_image_is_train_and_classes_are_sorted(tmp_path):
    root = _write(tmp_path, "image,labels\na.jpg,zebra;ant\nsub/b.png,\n")
    assert dataset_splits(root) == ["train"]
    ds = open_weak_dataset(root, "train")
    assert ds.classes == ["ant", "zebra"]
    assert [(i.id, i.file_name, i.labels) for i in ds.images] == [(1, "a.jpg", (1, 2)), (2, "sub/b.png", ())]


@pytest.mark.parametrize(("rows", "classes", "message"), [
    ("img,labels\na.jpg,cat\n", None, "labels.csv row 1: header must be"),
    ("image,labels\na.jpg,cat\na.jpg,dog\n", None, "labels.csv row 3: duplicate row for a.jpg"),
    ("image,labels\nmissing.jpg,cat\n", None, "labels.csv row 2: images/missing.jpg: image not found"),
    ("image,labels\n../a.jpg,cat\n", None, "labels.csv row 2: ../a.jpg: must be a path inside images/"),
    ("image,labels\n/etc/a.jpg,cat\n", None, "labels.csv row 2: /etc/a.jpg: must be a path inside images/"),
    ("image,labels\na.txt,cat\n", None, "labels.csv row 2: a.txt: not a .jpg, .jpeg or .png file"),
    ("image,labels\na.jpg,cat,extra\n", None, "labels.csv row 2: expected 2 columns, got 3"),
    ("image,labels\na.jpg,cat;bird\n", "cat\ndog\n", "labels.csv row 2: unknown class 'bird' (not in classes.txt)"),
    ("image,labels,split\na.jpg,cat,\n", None, "labels.csv row 2: empty split"),
])
def test_labels_csv_errors_name_file_and_row(tmp_path, capsys, rows, classes, message):
    root = _write(tmp_path / "ds", rows, classes)
    with pytest.raises(WsisInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_weak_dataset(root, "train")
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("wsis train: error: ") and message in error


def test_coco_without_masks_is_tags_only(synth_dataset, tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(synth_dataset / "JPEGImages", root / "val")
    coco = ground_truth_to_coco(open_ground_truth(synth_dataset, "val"))
    tags = [{k: v for k, v in a.items() if k not in ("segmentation", "bbox", "area")} for a in coco["annotations"]]
    (root / "annotations" / "instances_val.json").write_text(json.dumps({**coco, "annotations": tags}))
    weak = open_weak_dataset(root, "val")
    assert [i.labels for i in weak.images] == [i.labels for i in open_weak_dataset(synth_dataset, "val").images]
    assert summarize_split(root, "val").with_ground_truth == 0
    assert main(["convert", "--data", str(root), "--split", "val", "--out", str(tmp_path / "gt.json")]) == 2
    first = coco["images"][0]["id"]
    mixed = [a if a["image_id"] == first else t for a, t in zip(coco["annotations"], tags)]
    (root / "annotations" / "instances_val.json").write_text(json.dumps({**coco, "annotations": mixed}))
    assert summarize_split(root, "val").with_ground_truth == 1


@pytest.mark.parametrize(("images", "message"), [
    ("abc", "images is not a list"),
    ([{"file_name": "x.jpg", "width": 2, "height": 2}], "images\\[0\\] has no int 'id'"),
    ([{"id": 1, "width": 2, "height": 2}], "images\\[0\\] has no str 'file_name'"),
    ([{"id": 1, "file_name": "/etc/passwd", "width": 2, "height": 2}], "image outside the dataset folder"),
])
def test_malformed_coco_files_are_one_line_errors(tmp_path, images, message):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "categories": [{"id": 1, "name": "cat"}], "annotations": []}))
    with pytest.raises(WsisInputError, match=message):
        open_weak_dataset(tmp_path, "train")


def test_image_folder_lists_images_recursively_without_labels(tmp_path):
    root = _write(tmp_path, "", images=("z.jpg", "a/b.PNG", "a/c.jpeg")) / "images"
    (root / "notes.txt").write_text("not an image")
    ds = open_image_folder(root)
    assert [(i.id, i.file_name, i.labels) for i in ds.images] == [(1, "a/b.PNG", ()), (2, "a/c.jpeg", ()), (3, "z.jpg", ())]
    (tmp_path / "empty").mkdir()
    with pytest.raises(WsisInputError, match="no .jpg, .jpeg or .png image"):
        open_image_folder(tmp_path / "empty")
