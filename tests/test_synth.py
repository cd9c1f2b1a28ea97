"""The synthetic VOC-layout generator and the palette PNG helpers."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wsis_core.data.palette import read_label_png, save_label_png, voc_palette
from wsis_core.data.synth import _PART_COLORS, SYNTH_CLASSES, generate_dataset
from wsis_core.data.types import VOID
from wsis_core.errors import WsisInputError


def _split(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _objects(xml_path: Path) -> list[tuple[str, tuple[int, int, int, int]]]:
    root = ET.parse(xml_path).getroot()
    return [
        (obj.findtext("name"), tuple(int(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
        for obj in root.iter("object")
    ]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- palette
def test_voc_palette_matches_the_standard_colormap():
    palette = voc_palette()
    assert len(palette) == 768
    assert palette[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    assert palette[7 * 3:8 * 3] == [128, 128, 128] and palette[15 * 3:16 * 3] == [192, 128, 128]
    assert palette[255 * 3:] == [224, 224, 192]


def test_label_png_round_trip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 6, size=(17, 23)).astype(np.uint8)
    labels[0, :5] = VOID
    path = tmp_path / "labels.png"
    save_label_png(path, labels)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[:768] == voc_palette()
    np.testing.assert_array_equal(read_label_png(path), labels)


def test_read_label_png_rejects_other_files(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(rgb)
    with pytest.raises(WsisInputError, match="not a palette PNG"):
        read_label_png(rgb)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(WsisInputError, match="garbage.png"):
        read_label_png(garbage)
    with pytest.raises(WsisInputError, match="missing.png"):
        read_label_png(tmp_path / "missing.png")


# ----------------------------------------------------------------------------------------------- layout
def test_every_listed_image_has_all_files(synth_dataset):
    assert (synth_dataset / "classes.txt").read_text().split() == list(SYNTH_CLASSES)
    train, val = _split(synth_dataset, "train"), _split(synth_dataset, "val")
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    for split, ids in (("train", train), ("val", val)):
        assert (synth_dataset / "ImageSets" / "Main" / f"{split}.txt").read_text().split() == ids
    for image_id in train + val:
        with Image.open(synth_dataset / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (96, 96)
        root = ET.parse(synth_dataset / "Annotations" / f"{image_id}.xml").getroot()
        assert root.findtext("filename") == f"{image_id}.jpg"
        assert [root.find("size").findtext(k) for k in ("width", "height", "depth")] == ["96", "96", "3"]
        for folder in ("SegmentationClass", "SegmentationObject"):
            assert read_label_png(synth_dataset / folder / f"{image_id}.png").shape == (96, 96)


def test_annotations_agree_with_the_label_pngs(synth_dataset):
    classes = (synth_dataset / "classes.txt").read_text().split()
    for image_id in _split(synth_dataset, "train") + _split(synth_dataset, "val"):
        objects = _objects(synth_dataset / "Annotations" / f"{image_id}.xml")
        instance_map = read_label_png(synth_dataset / "SegmentationObject" / f"{image_id}.png")
        class_map = read_label_png(synth_dataset / "SegmentationClass" / f"{image_id}.png")
        assert 1 <= len(objects) <= 5 and 1 <= len({name for name, _ in objects}) <= 3
        np.testing.assert_array_equal(instance_map == VOID, class_map == VOID)
        assert (instance_map == VOID).any()
        np.testing.assert_array_equal(instance_map == 0, class_map == 0)
        assert set(np.unique(instance_map)) == {0, VOID, *range(1, len(objects) + 1)}
        for index, (name, box) in enumerate(objects, start=1):
            assert name in classes
            ys, xs = np.nonzero(instance_map == index)
            assert len(ys) >= 30
            assert set(np.unique(class_map[ys, xs])) == {classes.index(name) + 1}
            assert box == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)


def test_void_is_a_thin_band_along_instance_boundaries(synth_dataset):
    image_id = _split(synth_dataset, "train")[0]
    instance_map = read_label_png(synth_dataset / "SegmentationObject" / f"{image_id}.png")
    void = instance_map == VOID
    # every void pixel touches a labelled pixel or background: the band is one pixel wide
    labelled = (instance_map != VOID).astype(np.uint8)
    assert np.all(cv2.dilate(labelled, np.ones((3, 3), np.uint8))[void] == 1)


def test_instances_touch_or_overlap_in_a_sample(tmp_path):
    root = tmp_path / "touch"
    generate_dataset(root, n_train=30, n_val=0, size=80, seed=11)
    kernel = np.ones((5, 5), np.uint8)  # a 2-pixel dilation bridges the two void bands between neighbours
    touching = 0
    for image_id in _split(root, "train"):
        instance_map = read_label_png(root / "SegmentationObject" / f"{image_id}.png")
        ids = [i for i in np.unique(instance_map) if i not in (0, VOID)]
        grown = {i: cv2.dilate((instance_map == i).astype(np.uint8), kernel).astype(bool) for i in ids}
        touching += any((grown[i] & (instance_map == j)).any() for i in ids for j in ids if i < j)
    assert touching >= 3


def _instance_colours(root: Path) -> list[tuple[str, np.ndarray]]:
    """(class, median RGB of the instance's labelled pixels) for every instance of the train split."""
    classes = (root / "classes.txt").read_text().split()
    found = []
    for image_id in _split(root, "train"):
        image = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"), np.float32)
        instance_map = read_label_png(root / "SegmentationObject" / f"{image_id}.png")
        semantic = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        for index in set(np.unique(instance_map)) - {0, VOID}:
            pixels = instance_map == index
            found.append((classes[int(np.median(semantic[pixels])) - 1], np.median(image[pixels], axis=0)))
    return found


def _nearest_class_by_colour(found: list[tuple[str, np.ndarray]]) -> float:
    """Fraction of instances whose colour is nearest the mean colour of their own class (leave-one-in)."""
    means = {name: np.mean([c for n, c in found if n == name], axis=0) for name in {n for n, _ in found}}
    names = sorted(means)
    hits = [names[int(np.argmin([np.linalg.norm(colour - means[m]) for m in names]))] == name for name, colour in found]
    return float(np.mean(hits))


def test_easy_paints_each_class_in_its_own_colours_and_hard_does_not(tmp_path):
    generate_dataset(tmp_path / "easy", 24, 0, 96, seed=2, difficulty="easy")
    generate_dataset(tmp_path / "hard", 24, 0, 96, seed=2, difficulty="hard")
    assert _nearest_class_by_colour(_instance_colours(tmp_path / "easy")) > 0.9
    assert _nearest_class_by_colour(_instance_colours(tmp_path / "hard")) < 0.6


def test_parts_shares_the_body_and_tells_the_class_by_a_small_part(tmp_path):
    root = tmp_path / "parts"
    generate_dataset(root, 60, 0, 160, seed=2, difficulty="parts")
    classes = (root / "classes.txt").read_text().split()
    counts, same_class, part_fractions = [], 0, []
    for image_id in _split(root, "train"):
        objects = _objects(root / "Annotations" / f"{image_id}.xml")
        instance_map = read_label_png(root / "SegmentationObject" / f"{image_id}.png")
        class_map = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        image = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"), np.float32)
        assert set(np.unique(instance_map)) == {0, VOID, *range(1, len(objects) + 1)}
        counts.append(len(objects))
        same_class += len({name for name, _ in objects}) < len(objects)
        for index, (name, box) in enumerate(objects, start=1):
            ys, xs = np.nonzero(instance_map == index)
            assert set(np.unique(class_map[ys, xs])) == {classes.index(name) + 1}
            assert box == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
            # the class colour covers a small part of the instance (JPEG: within 40 per channel)
            near = np.abs(image[ys, xs] - np.array(_PART_COLORS[name], np.float32)).max(axis=1) < 40
            part_fractions.append(near.mean())
    assert 1 <= min(counts) and max(counts) <= 9 and 2.5 <= np.mean(counts) <= 4.0
    assert same_class >= 0.4 * len(counts)
    assert 0.02 < np.median(part_fractions) < 0.3
    # the body, most of an instance, is no guide to the class
    assert _nearest_class_by_colour(_instance_colours(root)) < 0.6


# ------------------------------------------------------------------------------------------ determinism
def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for name, data in _files(root).items():
        digest.update(name.encode())
        digest.update(data)
    return digest.hexdigest()


@pytest.mark.parametrize("difficulty, expected", [
    ("easy", "3f27d9e24ef13766ac2cbe0e88dd823b571384eda05cef5cb009c0b985a5cba2"),
    ("hard", "8519c222203a864de88dd2de5714c8f98251ef5c7a92ac6a8e6b1e0a26ebaa94"),
])
def test_easy_and_hard_files_stay_byte_identical(tmp_path, difficulty, expected):
    """The files of commit 7e32e43: adding ``parts`` changed no byte of the other difficulties."""
    generate_dataset(tmp_path / difficulty, 4, 2, 96, seed=7, difficulty=difficulty)
    assert _digest(tmp_path / difficulty) == expected


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    progress = []
    generate_dataset(tmp_path / "a", 3, 1, 64, seed=5, on_progress=lambda done, total: progress.append((done, total)))
    generate_dataset(tmp_path / "b", 3, 1, 64, seed=5)
    generate_dataset(tmp_path / "c", 3, 1, 64, seed=6)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert len(a) == 1 + 4 * 4 + 4 and a == b
    assert a.keys() == c.keys()
    assert a["JPEGImages/synth_000001.jpg"] != c["JPEGImages/synth_000001.jpg"]


def test_worker_processes_write_the_same_files(tmp_path):
    progress = []
    generate_dataset(tmp_path / "serial", 5, 2, 64, seed=4)
    generate_dataset(tmp_path / "parallel", 5, 2, 64, seed=4, workers=2,
                     on_progress=lambda done, total: progress.append((done, total)))
    assert _files(tmp_path / "serial") == _files(tmp_path / "parallel")
    assert progress == [(done, 7) for done in range(1, 8)]


def test_regenerating_replaces_an_earlier_output(tmp_path):
    root = tmp_path / "data"
    generate_dataset(root, 3, 1, 64, seed=1)
    generate_dataset(root, 1, 1, 64, seed=2)
    assert _split(root, "train") == ["synth_000001"] and _split(root, "val") == ["synth_000002"]
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == ["synth_000001.jpg", "synth_000002.jpg"]
    fresh = tmp_path / "fresh"
    generate_dataset(fresh, 1, 1, 64, seed=2)
    assert _files(root) == _files(fresh)


# ------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "n_train, n_val, size, seed",
    [(1, 0, 63, 0), (0, 1, 64, 0), (1, -1, 64, 0), (1, 0, 64, -1), (1.5, 0, 64, 0), (True, 0, 64, 0)],
)
def test_bad_arguments_raise(tmp_path, n_train, n_val, size, seed):
    with pytest.raises(WsisInputError):
        generate_dataset(tmp_path / "out", n_train, n_val, size, seed)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options", [{"difficulty": "medium"}, {"workers": 0}, {"workers": 1.0}])
def test_bad_options_raise(tmp_path, options):
    with pytest.raises(WsisInputError):
        generate_dataset(tmp_path / "out", 1, 0, 64, seed=0, **options)
    assert not (tmp_path / "out").exists()


def test_refuses_foreign_folders(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "JPEGImages").mkdir(parents=True)
    (foreign / "JPEGImages" / "2007_000027.jpg").write_bytes(b"keep me")
    with pytest.raises(WsisInputError, match="not empty"):
        generate_dataset(foreign, 1, 0, 64, seed=0)
    assert (foreign / "JPEGImages" / "2007_000027.jpg").read_bytes() == b"keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(WsisInputError, match="not a folder"):
        generate_dataset(a_file, 1, 0, 64, seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_dataset(empty, 1, 0, 64, seed=0)
    assert (empty / "classes.txt").exists()
