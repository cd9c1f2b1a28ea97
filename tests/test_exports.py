"""Exports of pseudo labels: COCO as written, COCO polygons and YOLO, through the API and ``wsis export``."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from pycocotools.coco import COCO

from integration import harness
from integration.review_data import rect_mask
from services.workers.celery_app import app as celery_app
from wsis_core import cli, masks
from wsis_core.exports import mask_polygons, polygon_area, to_polygon_coco, write_yolo_zip
from wsis_core.quality import split_ground_truth

AREA_TOLERANCE = 0.10


def disc(size: int, cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def test_polygons_rasterise_back_to_their_masks():
    for mask in (rect_mask(20, 20, 3, 6, 4, 9), disc(40, 20, 18, 9), rect_mask(20, 20, 0, 20, 0, 20)):
        polygons = mask_polygons(mask)
        assert polygons and all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
        assert abs(polygon_area(polygons, *mask.shape) - mask.sum()) <= 0.03 * mask.sum()
    two = rect_mask(20, 20, 0, 4, 0, 4) | rect_mask(20, 20, 10, 20, 10, 20)
    assert [polygon_area([p], 20, 20) for p in mask_polygons(two)] == [100, 16]  # largest first
    assert mask_polygons(rect_mask(20, 20, 5, 6, 2, 9)) != []  # a one-pixel line still has a polygon


def load_coco(tmp_path, content: bytes, name: str) -> COCO:
    (tmp_path / name).write_bytes(content)
    return COCO(str(tmp_path / name))


def check_polygon_file(tmp_path, rle_labels: dict, content: bytes) -> None:
    """pycocotools loads it; every instance's polygon area is within 10 % of its RLE area."""
    coco = load_coco(tmp_path, content, "polygons.json")
    assert set(coco.dataset) >= {"info", "licenses", "images", "categories", "annotations"}
    rle_area = {ann["id"]: masks.area(ann["segmentation"]) for ann in rle_labels["annotations"]}
    assert len(coco.getAnnIds()) == len(rle_area) > 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert isinstance(ann["segmentation"], list)
        assert abs(int(coco.annToMask(ann).sum()) - rle_area[ann["id"]]) <= AREA_TOLERANCE * rle_area[ann["id"]]
        assert ann["area"] == int(coco.annToMask(ann).sum())


def check_yolo_zip(content: bytes, labels: dict, names: list[str]) -> None:
    """Every image has its label file; lines are ``class x y ...`` with class in range and coordinates in [0, 1]."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        listed = archive.read("images.txt").decode().splitlines()
        data_yaml = archive.read("data.yaml").decode()
        files = {name: archive.read(name).decode() for name in archive.namelist() if name.startswith("labels/")}
    assert len(listed) == len(labels["images"]) == len(files)
    assert f"nc: {len(names)}" in data_yaml and all(json.dumps(name) in data_yaml for name in names)
    lines = [line.split() for text in files.values() for line in text.splitlines()]
    assert len(lines) == len(labels["annotations"])
    for fields in lines:
        assert 0 <= int(fields[0]) < len(names) and len(fields) >= 7 and len(fields) % 2 == 1
        assert all(0.0 <= float(v) <= 1.0 for v in fields[1:])


@pytest.fixture(scope="module")
def truth_labels(synth_dataset) -> dict:
    """The synthetic train split's ground truth as pseudo labels (real object shapes: discs, polygons)."""
    truth = split_ground_truth(synth_dataset, "train")
    return {**truth, "annotations": [{**ann, "score": 0.9} for ann in truth["annotations"]]}


def test_exports_of_real_shapes_load_back(tmp_path, truth_labels, synth_dataset):
    check_polygon_file(tmp_path, truth_labels, json.dumps(to_polygon_coco(truth_labels)).encode())
    buffer = io.BytesIO()
    write_yolo_zip(truth_labels, buffer, {image["id"]: image["file_name"] for image in truth_labels["images"]})
    check_yolo_zip(buffer.getvalue(), truth_labels, [c["name"] for c in truth_labels["categories"]])


@pytest.fixture
def api(tmp_path, monkeypatch, synth_dataset):
    celery_app.conf.task_always_eager = True
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))
    with harness.api_client(settings) as client:
        yield client, settings
    celery_app.conf.task_always_eager = False


def test_every_format_through_the_api_with_its_etag(api, tmp_path):
    client, settings = api
    round_id = harness.start_round(client)["id"]
    url = f"/api/rounds/{round_id}/pseudo-labels"
    coco = client.get(url, params={"format": "coco"})
    stored = next((settings.artifact_root / "runs").rglob("round_1/pseudo_labels.json")).read_bytes()
    assert coco.content == stored and coco.headers["etag"] == f'"{hashlib.sha256(stored).hexdigest()}"'
    assert client.get(url).content == stored  # coco is the default
    labels = json.loads(stored)
    load_coco(tmp_path, coco.content, "rle.json")
    polygon = client.get(url, params={"format": "coco-polygon"})
    assert polygon.status_code == 200 and polygon.headers["etag"] == f'"{hashlib.sha256(stored).hexdigest()}-coco-polygon"'
    check_polygon_file(tmp_path, labels, polygon.content)
    yolo = client.get(url, params={"format": "yolo"})
    assert yolo.headers["content-type"] == "application/zip"
    assert yolo.headers["content-disposition"] == 'attachment; filename="run1_round1_pseudo_labels_yolo.zip"'
    check_yolo_zip(yolo.content, labels, [c["name"] for c in labels["categories"]])
    with zipfile.ZipFile(io.BytesIO(yolo.content)) as archive:
        assert archive.read("images.txt").decode().splitlines()[0].startswith("JPEGImages/")
    for response in (coco, polygon, yolo):
        fmt = response.request.url.params["format"]
        head = client.head(url, params={"format": fmt})
        assert head.status_code == 200 and head.headers["etag"] == response.headers["etag"]
        again = client.get(url, params={"format": fmt}, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    assert client.get(url, params={"format": "voc"}).status_code == 422


def test_wsis_export_writes_each_format(tmp_path, truth_labels, synth_dataset, capsys):
    run = tmp_path / "run"
    (run / "round_2").mkdir(parents=True)
    (run / "round_2" / "pseudo_labels.json").write_text(json.dumps(truth_labels))
    classes = [c["name"] for c in truth_labels["categories"]]
    (run / "config.json").write_text(json.dumps({"data": str(synth_dataset), "classes": classes}))
    for fmt in ("coco", "coco-polygon", "yolo"):
        out = tmp_path / f"out-{fmt}"
        assert cli.main(["export", "--run", str(run), "--format", fmt, "--out", str(out)]) == 0
        assert "round 2" in capsys.readouterr().out
        if fmt == "coco":
            assert out.read_bytes() == (run / "round_2" / "pseudo_labels.json").read_bytes()
        elif fmt == "coco-polygon":
            check_polygon_file(tmp_path, truth_labels, out.read_bytes())
        else:
            check_yolo_zip(out.read_bytes(), truth_labels, classes)
            assert f"path: {json.dumps(str(synth_dataset))}" in zipfile.ZipFile(out).read("data.yaml").decode()
    assert cli.main(["export", "--run", str(run), "--round", "1", "--format", "yolo", "--out", str(tmp_path / "x")]) == 2
    assert "round 1 has no pseudo labels" in capsys.readouterr().err
