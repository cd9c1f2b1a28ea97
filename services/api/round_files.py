"""Where a round's files are, for the routes that read them (overlays, gallery, quality, exports, model).

A file a stage makes is served once that stage's job succeeded: before, the route answers 409 naming the
stage; an unknown round, a round without that stage, or a file gone from the store is 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.deps import get_or_404
from services.common import scratch, store
from services.common.models import SUCCEEDED, Artifact, Job, Round
from services.common.paths import OutsideRootError
from services.common.scratch import open_store
from services.common.settings import Settings
from wsis_core import run_layout
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.data.types import ImageInfo
from wsis_core.file_cache import LruCache

# (stage, kind) of the artifacts the review routes read
PSEUDO_LABELS, TRAIN_PREDICTIONS, VAL_PREDICTIONS, MODEL = (
    ("pseudo_labels", "pseudo_labels"), ("cues", "train_predictions"), ("evaluate", "val_predictions"),
    ("is_train", "model"))
CACHED_DATASETS = 8


@dataclass(frozen=True)
class RoundPlace:
    """A round, its run's dataset and the round's folder in the artifact store."""

    round_id: int
    run_id: int
    number: int
    status: str
    dataset_root: Path
    train_split: str
    val_split: str | None
    classes: tuple[str, ...]
    folder: Path


@dataclass(frozen=True)
class StoredFile:
    """An artifact file: where it is and its sha256 (from its Artifact row)."""

    path: Path
    sha256: str


def locate_round(session: Session, settings: Settings, round_id: int) -> RoundPlace:
    round_ = get_or_404(session, Round, round_id)
    dataset = round_.run.dataset
    local_runs = open_store(settings).local_root
    return RoundPlace(round_.id, round_.run_id, round_.number, round_.status,
                      dataset_root(settings, dataset.path), dataset.train_split, dataset.val_split,
                      tuple(dataset.classes), run_layout.round_dir(store.run_dir(local_runs, round_.run_id), round_.number))


def dataset_root(settings: Settings, path: str) -> Path:
    """The local folder of a dataset (an s3:// one is mirrored into the scratch once per process: a registered
    dataset does not change)."""
    key = (path, str(settings.data_root), str(settings.scratch))
    return _dataset_roots.get(key, lambda: scratch.dataset_folder(settings, path))


def stage_artifact(session: Session, settings: Settings, round_id: int, artifact: tuple[str, str], what: str):
    """The Artifact row (path, sha256, size) of ``artifact`` (stage, kind) of the round; 404 / 409 as the module
    says (``what`` names it)."""


    stage, kind = artifact
    job = session.scalar(select(Job).where(Job.round_id == round_id, Job.stage == stage))
    if job is None:
        round_ = get_or_404(session, Round, round_id)
        raise HTTPException(404, f"round {round_id} has no {stage} stage, so no {what} (round {round_.number} "
                                 f"of run {round_.run_id})")
    if job.status != SUCCEEDED:
        raise HTTPException(409, f"{what} of round {round_id}: its {stage} stage has not finished (it is {job.status})")
    found = session.execute(
        select(Artifact.path, Artifact.sha256, Artifact.size).where(
            Artifact.round_id == round_id, Artifact.stage == stage, Artifact.kind == kind)
    ).first()
    if found is None:
        raise HTTPException(404, f"round {round_id} has no {what} (its {stage} stage did not write any)")
    return found


def stage_file(session: Session, settings: Settings, round_id: int, artifact: tuple[str, str], what: str) -> StoredFile:
    """The local file of ``artifact`` (stage, kind) of the round (an object store's is fetched into the scratch);
    404 / 409 as the module says (``what`` names it)."""
    found = stage_artifact(session, settings, round_id, artifact, what)
    path = local_file(settings, found.path, found.sha256, f"{what} of round {round_id}")
    if not path.is_file():
        raise HTTPException(404, f"{what} of round {round_id} are missing from the artifact store")
    return StoredFile(path, found.sha256)


def local_file(settings: Settings, key: str, sha256: str, what: str) -> Path:
    """The local copy of artifact ``key``; 404 naming ``what`` if it is outside the store."""
    try:
        return scratch.fetch(settings, open_store(settings), key, sha256)
    except OutsideRootError:
        raise HTTPException(404, f"{what} are outside the artifact store") from None
    except FileNotFoundError:
        raise HTTPException(404, f"{what} are missing from the artifact store") from None


def next_round_id(session: Session, place: RoundPlace) -> int | None:
    return session.scalar(select(Round.id).where(Round.run_id == place.run_id, Round.number == place.number + 1))


def previous_labels(session: Session, settings: Settings, place: RoundPlace) -> StoredFile | None:
    """The previous round's pseudo labels, if that round produced them (None in round 1)."""
    previous = previous_round_id(session, place)
    if previous is None:
        return None
    try:
        return stage_file(session, settings, previous, PSEUDO_LABELS, "pseudo labels")
    except HTTPException:
        return None


def previous_round_id(session: Session, place: RoundPlace) -> int | None:
    return session.scalar(select(Round.id).where(Round.run_id == place.run_id, Round.number == place.number - 1))


_datasets: LruCache[dict[int, ImageInfo]] = LruCache(CACHED_DATASETS)
_dataset_roots: LruCache[Path] = LruCache(CACHED_DATASETS)


def split_images(root: Path, split: str) -> dict[int, ImageInfo]:
    """Image id -> image of a dataset split (read once per process: a registered dataset does not change)."""
    return _datasets.get((str(root), split), lambda: {info.id: info for info in open_weak_dataset(root, split).images})
