"""Pseudo labels in the formats other tools read.

- ``coco``: the round's ``pseudo_labels.json`` as it is (COCO, RLE masks).
- ``coco-polygon``: the same instances with polygon masks: the outer contours of each mask (OpenCV), traced
  on the pixel corners and simplified by at most half a pixel, so that pycocotools rasterises them back to
  the mask's pixels but a few along slanted edges (holes are filled).
  What Label Studio's COCO import and detectron2's polygon path expect.
- ``yolo``: a zip of ``labels/<image path without extension>.txt`` (one ``class x1 y1 x2 y2 ...`` line per
  instance, coordinates divided by the image's width and height, class ids from 0; the instance's largest
  contour), ``data.yaml`` (class names) and ``images.txt`` (the image paths, one a line).

Both COCO forms carry ``info`` and ``licenses``, which some importers require.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from wsis_core import masks, run_layout
from wsis_core.errors import WsisInputError
from wsis_core.io import atomic_file
from wsis_core.quality import by_image

FORMATS = ("coco", "coco-polygon", "yolo")
SUFFIXES = {"coco": ".json", "coco-polygon": ".json", "yolo": ".zip"}
MEDIA_TYPES = {"coco": "application/json", "coco-polygon": "application/json", "yolo": "application/zip"}
COCO_INFO = {"description": "wsis pseudo labels (weakly supervised instance segmentation)", "version": "1.0",
             "contributor": "wsis"}
UPSAMPLE = 2  # contours are traced on the mask at twice its size: their vertices fall on pixel corners
SIMPLIFY_PX = 1.0  # then simplified (Douglas-Peucker) by at most this much at that size: half a pixel


def with_coco_metadata(coco: dict) -> dict:
    """``coco`` with ``info`` and ``licenses`` (kept where present) ahead of its other keys."""
    return {"info": coco.get("info", COCO_INFO), "licenses": coco.get("licenses", []),
            **{key: value for key, value in coco.items() if key not in ("info", "licenses")}}


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a boolean mask as COCO polygons ``[x1, y1, x2, y2, ...]`` (at least 3 vertices),
    largest first, with vertices on pixel corners (simplified by at most half a pixel): ``pycocotools``
    rasterises them back to the mask's pixels but a few along slanted edges (holes aside)."""
    big = cv2.resize(mask.astype(np.uint8), None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    simplified = [cv2.approxPolyDP(c, SIMPLIFY_PX, True) for c in contours]
    simplified = [s if len(s) >= 3 else c for s, c in zip(simplified, contours)]  # a thin line keeps its 4 corners
    contours = sorted((c for c in simplified if len(c) >= 3), key=cv2.contourArea, reverse=True)
    return [((c.reshape(-1, 2) + 0.5) / UPSAMPLE).flatten().tolist() for c in contours]


def polygon_area(polygons: list[list[float]], height: int, width: int) -> int:
    """Pixels pycocotools rasterises ``polygons`` to (their union)."""
    if not polygons:
        return 0
    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))


def to_polygon_coco(labels: dict) -> dict:
    """``labels`` (COCO with RLE masks) with polygon masks; ``area`` is the polygons' rasterised area. An
    instance whose mask has no contour of 3 vertices (a line of pixels) keeps no polygon and is left out."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in labels["images"]}
    annotations = []
    for ann in labels["annotations"]:
        polygons = mask_polygons(masks.decode(ann["segmentation"]))
        if polygons:
            annotations.append({**ann, "segmentation": polygons, "area": polygon_area(polygons, *sizes[ann["image_id"]])})
    return with_coco_metadata({**labels, "annotations": annotations})


def yolo_lines(annotations: list[dict], width: int, height: int) -> list[str]:
    """YOLO segmentation lines of one image's annotations: class id (category_id - 1) and the largest contour,
    normalised to [0, 1]."""
    lines = []
    for ann in annotations:
        polygons = mask_polygons(masks.decode(ann["segmentation"]))
        if not polygons:
            continue
        points = np.asarray(polygons[0]).reshape(-1, 2) / (width, height)
        coordinates = " ".join(f"{v:.6f}" for v in np.clip(points, 0.0, 1.0).flatten())
        lines.append(f"{ann['category_id'] - 1} {coordinates}")
    return lines


def data_yaml(class_names: list[str], root: str | None) -> str:
    """``data.yaml`` of the YOLO export: dataset ``path`` (when known), ``train`` / ``val`` lists, ``names``."""
    header = [f"path: {json.dumps(root)}"] if root is not None else [
        "# path: the dataset folder (images.txt lists the images relative to it)"]
    names = [f"  {index}: {json.dumps(name)}" for index, name in enumerate(class_names)]
    return "\n".join([*header, "train: images.txt", "val: images.txt", f"nc: {len(class_names)}", "names:", *names, ""])


def write_yolo_zip(labels: dict, out: IO[bytes], image_paths: Mapping[int, str], root: str | None = None) -> None:
    """The YOLO export of ``labels`` into the binary file ``out``; ``image_paths``: image id -> the path written
    to ``images.txt`` (relative to ``root``, the dataset folder, when given)."""
    grouped = by_image(labels["annotations"])
    names = [category["name"] for category in sorted(labels["categories"], key=lambda c: c["id"])]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for image in labels["images"]:
            stem = PurePosixPath(image["file_name"]).with_suffix("").as_posix()
            lines = yolo_lines(grouped.get(image["id"], []), image["width"], image["height"])
            archive.writestr(f"labels/{stem}.txt", "".join(f"{line}\n" for line in lines))
        archive.writestr("data.yaml", data_yaml(names, root))
        archive.writestr("images.txt", "".join(f"{image_paths[image['id']]}\n" for image in labels["images"]))


def export(labels_path: Path, fmt: str, out: IO[bytes], image_paths: Mapping[int, str], root: str | None = None) -> None:
    """Write the pseudo labels of ``labels_path`` in format ``fmt`` (one of :data:`FORMATS`) to ``out``."""
    if fmt not in FORMATS:
        raise WsisInputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "coco":
        out.write(Path(labels_path).read_bytes())
        return
    labels = json.loads(Path(labels_path).read_text())
    if fmt == "coco-polygon":
        out.write(json.dumps(to_polygon_coco(labels)).encode())
    else:
        write_yolo_zip(labels, out, image_paths, root)


def round_labels(run_dir: Path, round_number: int | None = None) -> Path:
    """``pseudo_labels.json`` of round ``round_number`` of a run folder (None: the last round that has one)."""
    run_dir = Path(run_dir)
    if round_number is None:
        numbers = run_layout.rounds_with(run_dir, run_layout.PSEUDO_LABELS)
        if not numbers:
            raise WsisInputError(f"{run_dir}: no round has pseudo labels yet")
        round_number = max(numbers)
    path = run_layout.round_dir(run_dir, round_number) / run_layout.PSEUDO_LABELS
    if not path.is_file():
        raise WsisInputError(f"{run_dir}: round {round_number} has no pseudo labels")
    return path


def export_run(run_dir: Path, round_number: int | None, fmt: str, out: Path) -> Path:
    """Write the pseudo labels of a run folder's round (None: the last) in ``fmt`` to ``out``; for ``yolo``
    ``data.yaml`` names the run's dataset folder and ``images.txt`` lists the images relative to it.
    Returns the label file exported."""
    from wsis_core.data.dataset import open_weak_dataset
    from wsis_core.round_context import read_config

    labels = round_labels(run_dir, round_number)
    config = read_config(run_dir)
    root = Path(config.data)
    paths = {}
    if fmt == "yolo":
        paths = {info.id: info.path.relative_to(root).as_posix()
                 for info in open_weak_dataset(root, config.train_split).images}
    with atomic_file(out) as handle:
        export(labels, fmt, handle, paths, str(root))
    return labels
