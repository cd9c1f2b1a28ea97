"""Hand-made label files for the review tests (overlays, gallery, quality, exports): rectangles as RLE masks.

``rect_annotation`` builds one COCO annotation; ``replace_round_file`` puts a label file in place of a round's
artifact after the fake backend finished it, with the Artifact row's sha256 and size kept in step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from sqlalchemy import update

from services.common.db import sessionmaker_for
from services.common.models import SUCCEEDED, Artifact, Job, Round
from wsis_core import masks


def rect_mask(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def rect_annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray, score: float | None = None) -> dict:
    rle = masks.encode(mask)
    annotation = {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": rle,
                  "bbox": masks.to_bbox(rle), "area": masks.area(rle), "iscrowd": 0}
    if score is not None:
        annotation["score"] = score
    return annotation


def replace_round_file(settings, round_id: int, kind: str, content) -> Path:
    """Write ``content`` (JSON) over the round's ``kind`` artifact and update its row; returns the file."""
    with sessionmaker_for(settings.database_url)() as session, session.begin():
        relative = session.scalar(
            update(Artifact).where(Artifact.round_id == round_id, Artifact.kind == kind).values(size=0)
            .returning(Artifact.path))
        path = settings.artifact_root / relative
        path.write_text(json.dumps(content))
        data = path.read_bytes()
        session.execute(update(Artifact).where(Artifact.round_id == round_id, Artifact.kind == kind)
                        .values(size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return path


def add_stage_file(settings, round_id: int, stage: str, kind: str, name: str, data: bytes) -> Path:
    """Record ``data`` as the round's ``kind`` artifact of ``stage`` (files the fake backend does not make: val
    predictions, the IS model), adding a succeeded job of ``stage`` when the round has none."""
    with sessionmaker_for(settings.database_url)() as session, session.begin():
        round_ = session.get(Round, round_id)
        relative = f"runs/{round_.run_id}/round_{round_.number}/{name}"
        path = settings.artifact_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if not any(job.stage == stage for job in round_.jobs):
            round_.jobs.append(Job(stage=stage, position=len(round_.jobs), queue="cpu", status=SUCCEEDED, progress=1.0))
        session.add(Artifact(round_id=round_id, stage=stage, kind=kind, path=relative, size=len(data),
                             sha256=hashlib.sha256(data).hexdigest()))
    return path
