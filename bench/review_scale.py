"""Latency of the review routes on a 10,000-image round: gallery, quality report, overlays and exports.

No training: the bench writes a tagged folder of N small images (flat colours with a few shapes) and a
``ground_truth.json``, fabricates two rounds of pseudo labels (random discs and boxes, round 2 moved, some
dropped), records them in a fresh SQLite database as finished rounds, and asks the API in-process
(Starlette's TestClient) for each route, cold (first request: index built, overlay rendered, export made)
and warm (the same again), timing every request.

    nice -n 19 python bench/review_scale.py --images 10000 --out bench/results/review_scale.md
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reporting import machine  # noqa: E402
from wsis_core import masks  # noqa: E402

SIZE = 256
CLASSES = ("cat", "dog", "car", "tree")
REPEATS = 5


def write_dataset(root: Path, n: int, rng: np.random.Generator) -> list[list[dict]]:
    """N images (``images/img_<k>.png``), ``labels.csv``, ``classes.txt``; returns per image its objects."""
    (root / "images").mkdir(parents=True)
    objects, rows = [], []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for k in range(n):
        pixels = np.full((SIZE, SIZE, 3), rng.integers(60, 200, 3), dtype=np.uint8)
        found = []
        for _ in range(int(rng.integers(0, 4))):
            category = int(rng.integers(1, len(CLASSES) + 1))
            cy, cx, r = (int(v) for v in rng.integers((32, 32, 12), (SIZE - 32, SIZE - 32, 40)))
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            pixels[mask] = rng.integers(0, 255, 3)
            found.append({"category": category, "mask": mask})
        Image.fromarray(pixels).save(root / "images" / f"img_{k:05d}.png", compress_level=1)
        objects.append(found)
        rows.append([f"img_{k:05d}.png", ";".join(sorted({CLASSES[o["category"] - 1] for o in found}))])
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels"])
        writer.writerows(rows)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    return objects


def coco(objects: list[list[dict]], shift: int, drop: float, rng: np.random.Generator, scores: bool) -> dict:
    """A COCO file of the objects' masks, each moved by up to ``shift`` pixels, a ``drop`` fraction left out."""
    images, annotations = [], []
    for k, found in enumerate(objects, start=1):
        images.append({"id": k, "file_name": f"img_{k - 1:05d}.png", "width": SIZE, "height": SIZE})
        for obj in found:
            if rng.random() < drop:
                continue
            dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2)) if shift else (0, 0)
            rle = masks.encode(np.roll(obj["mask"], (dy, dx), axis=(0, 1)))
            ann = {"id": len(annotations) + 1, "image_id": k, "category_id": obj["category"], "segmentation": rle,
                   "bbox": masks.to_bbox(rle), "area": masks.area(rle), "iscrowd": 0}
            if scores:
                ann["score"] = round(float(rng.uniform(0.05, 1.0)), 3)
            annotations.append(ann)
    categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES, start=1)]
    return {"images": images, "categories": categories, "annotations": annotations}


def record_rounds(settings, dataset_id: int, labels: list[Path]) -> list[int]:
    """Finished rounds of a new run whose pseudo_labels artifacts are ``labels`` (round k: labels[k-1])."""
    from services.common.db import sessionmaker_for
    from services.common.models import SUCCEEDED, Artifact, Job, Round, Run

    ids = []
    with sessionmaker_for(settings.database_url)() as session, session.begin():
        run = Run(dataset_id=dataset_id, config={"profile": "tiny"})
        session.add(run)
        session.flush()
        for number, path in enumerate(labels, start=1):
            target = settings.artifact_root / "runs" / str(run.id) / f"round_{number}" / "pseudo_labels.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            data = target.read_bytes()
            round_ = Round(run_id=run.id, number=number, status=SUCCEEDED)
            round_.jobs = [Job(stage="pseudo_labels", position=0, queue="cpu", status=SUCCEEDED, progress=1.0)]
            round_.artifacts = [Artifact(stage="pseudo_labels", kind="pseudo_labels", size=len(data),
                                         path=target.relative_to(settings.artifact_root).as_posix(),
                                         sha256=hashlib.sha256(data).hexdigest())]
            session.add(round_)
            session.flush()
            ids.append(round_.id)
    return ids


def timed(client, url: str, repeats: int = 1) -> list[float]:
    """Milliseconds of ``repeats`` GETs of ``url`` (each must answer 200)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append(1000 * (time.perf_counter() - start))
        if response.status_code != 200:
            raise SystemExit(f"GET {url}: {response.status_code} {response.text[:300]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images of the synthetic round")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")
    parser.add_argument("--out", default="bench/results/review_scale.md", help="report to write")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        objects = write_dataset(scratch / "data" / "big", args.images, rng)
        truth = coco(objects, 0, 0.0, rng, scores=False)
        (scratch / "data" / "big" / "ground_truth.json").write_text(json.dumps(truth))
        for number, (shift, drop) in enumerate(((2, 0.1), (3, 0.15)), start=1):
            (scratch / f"labels_{number}.json").write_text(json.dumps(coco(objects, shift, drop, rng, scores=True)))
        print(f"synthetic data: {args.images} images, {len(truth['annotations'])} instances "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        rows, sizes = measure(scratch, args.images)
    write_report(Path(args.out), args, rows, sizes, len(truth["annotations"]))


def measure(scratch: Path, n: int) -> tuple[list[tuple[str, str, float, float]], dict[str, int]]:
    os.environ.update({"WSIS_DATABASE_URL": f"sqlite:///{scratch}/wsis.sqlite", "WSIS_BROKER_URL": "memory://",
                       "WSIS_RESULT_BACKEND": "cache+memory://", "WSIS_DATA_ROOT": str(scratch / "data"),
                       "WSIS_ARTIFACT_ROOT": str(scratch / "artifacts"), "WSIS_API_TOKEN": "",
                       "WSIS_READ_CACHE_MS": "0"})
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.common.db import upgrade_database
    from services.common.settings import get_settings

    settings = get_settings()
    upgrade_database(settings.database_url)
    rows: list[tuple[str, str, float, float]] = []  # (route, what, cold ms, warm median ms)
    sizes: dict[str, int] = {}
    with TestClient(create_app(settings)) as client:
        start = time.perf_counter()
        dataset = client.post("/api/datasets", json={"name": "big", "path": "big"})
        assert dataset.status_code == 201, dataset.text
        rows.append(("POST /api/datasets", f"register {n} images", 1000 * (time.perf_counter() - start), float("nan")))
        first, second = record_rounds(settings, dataset.json()["id"],
                                      [scratch / "labels_1.json", scratch / "labels_2.json"])

        def row(route: str, what: str, url: str) -> None:
            cold = timed(client, url)[0]
            warm = statistics.median(timed(client, url, REPEATS))
            rows.append((route, what, cold, warm))
            print(f"  {route} {what}: cold {cold:.0f} ms, warm {warm:.1f} ms", flush=True)

        gallery = f"/api/rounds/{second}/gallery"
        row("gallery", "first page (index of both rounds built when cold)", f"{gallery}?limit=24")
        pages = -(-n // 24)
        row("gallery", f"page {pages // 2 + 1} of {pages}, review order", f"{gallery}?limit=24&offset={24 * (pages // 2)}")
        row("gallery", "class filter, id order", f"{gallery}?limit=24&class=dog&sort=id")
        row("quality", "round 2 (with ground truth of every image, vs round 1)", f"/api/rounds/{second}/quality")
        row("quality", "round 1", f"/api/rounds/{first}/quality")
        items = client.get(f"{gallery}?limit=24").json()["items"]
        thumbs = [timed(client, item["thumbnail_url"])[0] for item in items]
        warm_thumbs = [timed(client, item["thumbnail_url"])[0] for item in items]
        rows.append(("overlay", "24 thumbnails of a gallery page (160 px), each", statistics.median(thumbs),
                     statistics.median(warm_thumbs)))
        row("overlay", "full size", items[0]["overlay_url"])
        for fmt in ("coco", "coco-polygon", "yolo"):
            url = f"/api/rounds/{second}/pseudo-labels?format={fmt}"
            row("pseudo-labels", f"format={fmt}", url)
            sizes[fmt] = len(client.get(url).content)
    return rows, sizes


def write_report(out: Path, args, rows, sizes: dict[str, int], instances: int) -> None:
    lines = [
        "# Review routes on a large round (`bench/review_scale.py`)", "",
        f"Command: `nice -n 19 python bench/review_scale.py --images {args.images} --seed {args.seed}`  ",
        f"Machine: {machine()}  ",
        f"Data: {args.images} synthetic {SIZE} px images, {instances} ground-truth instances (0-3 discs per image), "
        "two rounds of pseudo labels (the discs moved by up to 2 and 3 px, 10 % and 15 % dropped, random scores); "
        "SQLite, API in-process (TestClient), read cache off. Cold: the first request (index built, report "
        f"computed, overlay rendered, export made and kept); warm: median of {REPEATS} more.", "",
        "| route | request | cold ms | warm ms |", "| --- | --- | ---: | ---: |",
    ]
    for route, what, cold, warm in rows:
        lines.append(f"| {route} | {what} | {cold:.0f} | {'' if warm != warm else f'{warm:.1f}'} |")
    lines += ["", "Export sizes: " + ", ".join(f"{fmt} {size / 1e6:.1f} MB" for fmt, size in sizes.items()), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
