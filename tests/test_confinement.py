"""Every file a dataset names stays inside the dataset folder, and bad files are one-line WsisInputErrors.

Issue 19, items 1 and 7: symlinked classes.txt / split lists / image folders, split-list lines and COCO
``file_name`` values leading out of the folder, non-UTF-8 class lists, decompression bombs and
malformed COCO files.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from wsis_core.data.confine import inside, read_text_inside
from wsis_core.data.dataset import open_ground_truth, open_weak_dataset
from wsis_core.errors import WsisInputError
from wsis_core.io import write_json

SECRET = "root:x:0:0:root:/root:/bin/bash"


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside every dataset folder whose content must never reach a message or a class list."""
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text(f"{SECRET}\n")
    return path


@pytest.fixture
def voc(tmp_path, synth_dataset) -> Path:
    root = tmp_path / "voc"
    shutil.copytree(synth_dataset, root)
    return root


def first_id(voc: Path) -> str:
    return (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]


def refused(root: Path, split: str = "train", ground_truth: bool = False) -> str:
    with pytest.raises(WsisInputError) as err:
        (open_ground_truth(root, split).get(0) if ground_truth else open_weak_dataset(root, split))
    message = str(err.value)
    assert "\n" not in message and SECRET not in message and "root:x" not in message
    return message


def test_inside_resolves_symlinks_and_refuses_what_leaves_the_root(tmp_path, secret):
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    (root / "link").symlink_to(secret)
    (root / "loop").symlink_to(root / "loop")
    assert inside(root, "sub", "folder") == (root / "sub").resolve()
    for name in ("../outside/passwd", str(secret), "link", "sub/../../outside/passwd"):
        with pytest.raises(WsisInputError, match="outside the dataset folder"):
            inside(root, name, "file")
    with pytest.raises(WsisInputError, match="symlink loop"):
        inside(root, "loop/x", "file")
    with pytest.raises(WsisInputError, match="NUL"):
        inside(root, "a\x00b", "file")


def test_read_text_inside_refuses_non_utf8_and_missing_files(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(WsisInputError, match="not UTF-8"):
        read_text_inside(tmp_path, "latin1.txt", "class list")
    with pytest.raises(WsisInputError, match="not found"):
        read_text_inside(tmp_path, "missing.txt", "class list")


def test_a_classes_file_symlinked_out_is_refused(voc, secret):
    (voc / "classes.txt").unlink()
    (voc / "classes.txt").symlink_to(secret)
    assert "outside the dataset folder" in refused(voc)


def test_a_non_utf8_classes_file_is_a_one_line_error(voc):
    (voc / "classes.txt").write_bytes(b"\xff\xfe\x00c\x00a\x00t")
    assert "not UTF-8" in refused(voc)


def test_a_split_list_symlinked_to_a_secret_file_does_not_show_it(voc, secret):
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.unlink()
    split.symlink_to(secret)
    assert "outside the dataset folder" in refused(voc)


@pytest.mark.parametrize("line", ["../../outside/ds/JPEGImages/x", "/etc/passwd", "../../../../../../../tmp/x"])
def test_split_list_lines_leaving_the_folder_are_refused(voc, line):
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text(f"{line}\n" + split.read_text())
    assert "outside the dataset folder" in refused(voc)


def test_an_image_folder_symlinked_out_is_refused(voc, tmp_path):
    moved = tmp_path / "elsewhere" / "JPEGImages"
    shutil.move(voc / "JPEGImages", moved)
    (voc / "JPEGImages").symlink_to(moved, target_is_directory=True)
    assert "outside the dataset folder" in refused(voc)


def test_an_annotation_symlinked_out_is_refused(voc, secret):
    xml = voc / "Annotations" / f"{first_id(voc)}.xml"
    xml.unlink()
    xml.symlink_to(secret)
    assert "outside the dataset folder" in refused(voc)


def test_a_mask_symlinked_out_is_refused(voc, tmp_path):
    mask = voc / "SegmentationObject" / f"{first_id(voc)}.png"
    outside = tmp_path / "mask.png"
    shutil.move(mask, outside)
    mask.symlink_to(outside)
    assert "outside the dataset folder" in refused(voc, ground_truth=True)


def test_symlinks_inside_the_folder_still_work(voc):
    image = voc / "JPEGImages" / f"{first_id(voc)}.jpg"
    copy = voc / "JPEGImages" / "copy.jpg"
    shutil.move(image, copy)
    image.symlink_to("copy.jpg")
    assert open_weak_dataset(voc, "train").images[0].file_name == f"{first_id(voc)}.jpg"


def test_a_decompression_bomb_is_a_one_line_error(voc):
    image = voc / "JPEGImages" / f"{first_id(voc)}.jpg"
    image.write_bytes(png_header_claiming(100_000, 100_000))
    assert "too large" in refused(voc)


def png_header_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` RGB pixels (its data holds one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + data


def coco_dataset(tmp_path: Path, records: object, annotations: object = ()) -> Path:
    root = tmp_path / "coco"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(root / "train" / "a.jpg")
    data = {"images": records, "categories": [{"id": 1, "name": "cat"}], "annotations": list(annotations)
            if isinstance(annotations, (list, tuple)) else annotations}
    write_json(root / "annotations" / "instances_train.json", data)
    return root


GOOD_IMAGE = {"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}


def test_a_valid_coco_file_reads(tmp_path):
    dataset = open_weak_dataset(coco_dataset(tmp_path, [GOOD_IMAGE]), "train")
    assert [(info.file_name, info.width) for info in dataset.images] == [("a.jpg", 8)]


@pytest.mark.parametrize(
    ("records", "annotations", "message"),
    [
        ([{**GOOD_IMAGE, "file_name": "/etc/passwd"}], [], "outside the dataset folder"),
        ([{**GOOD_IMAGE, "file_name": "../../outside/passwd"}], [], "outside the dataset folder"),
        ([{k: v for k, v in GOOD_IMAGE.items() if k != "id"}], [], "id"),
        ([{k: v for k, v in GOOD_IMAGE.items() if k != "file_name"}], [], "file_name"),
        ("abc", [], "images"),
        ([GOOD_IMAGE], [1], "annotation"),
        ([GOOD_IMAGE], "abc", "annotations"),
        ([{**GOOD_IMAGE, "width": "8"}], [], "width"),
        ([GOOD_IMAGE, GOOD_IMAGE], [], "duplicate image id"),
    ],
)
def test_malformed_coco_files_are_one_line_errors(tmp_path, secret, records, annotations, message):
    assert message in refused(coco_dataset(tmp_path, records, annotations))


def test_a_coco_file_that_is_not_an_object_is_a_one_line_error(tmp_path):
    root = coco_dataset(tmp_path, [GOOD_IMAGE])
    (root / "annotations" / "instances_train.json").write_text(json.dumps([1, 2]))
    assert "not a COCO instances file" in refused(root)


def test_a_tagged_image_folder_symlinked_out_is_refused(tmp_path, secret):
    root, outside = tmp_path / "tagged", secret.parent
    root.mkdir()
    Image.new("RGB", (8, 6)).save(outside / "a.jpg")
    (root / "images").symlink_to(outside, target_is_directory=True)
    (root / "labels.csv").write_text("image,labels\na.jpg,cat\n")
    assert "outside the dataset folder" in refused(root)
