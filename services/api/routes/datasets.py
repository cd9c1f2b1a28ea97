"""Datasets: register a folder under ``WSIS_DATA_ROOT`` (checked with the weak-dataset reader), list, show."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.api.deps import (
    GUARDED, Mutating, PageDep, PathId, SessionDep, SettingsDep, error_responses, get_or_404,
)
from services.api.models import Dataset
from services.api.paths import OutsideRootError, UnresolvablePathError, relative_inside, resolve_inside
from services.api.schemas import DatasetCreate, DatasetOut
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.errors import WsisInputError

router = APIRouter(prefix="/datasets", tags=["datasets"])
MAX_PATH_CHARS = 1000  # the column's width (Dataset.path)


@router.post(
    "", status_code=201, response_model=DatasetOut, dependencies=Mutating,
    responses=error_responses(400, *GUARDED, 409),
)
def create_dataset(body: DatasetCreate, session: SessionDep, settings: SettingsDep) -> Dataset:
    """Register a dataset; 400 if its path leaves WSIS_DATA_ROOT or the folder is not a readable dataset."""
    try:
        root = resolve_inside(settings.data_root, body.path)
    except UnresolvablePathError:
        raise HTTPException(400, f"path {body.path!r} cannot be resolved (a symlink loop?)") from None
    except OutsideRootError:
        raise HTTPException(400, f"path {body.path!r} is outside WSIS_DATA_ROOT") from None
    relative = relative_inside(settings.data_root, root)
    if len(relative) > MAX_PATH_CHARS:
        raise HTTPException(400, f"path {body.path!r} resolves to more than {MAX_PATH_CHARS} characters")
    try:
        train = open_weak_dataset(root, body.train_split)
        val = open_weak_dataset(root, body.val_split)
    except (WsisInputError, OSError) as exc:
        raise HTTPException(400, f"not a usable dataset: {settings.masked(str(exc))}") from None
    dataset = Dataset(
        name=body.name, path=relative, train_split=body.train_split,
        val_split=body.val_split, classes=list(train.classes), num_train_images=len(train),
        num_val_images=len(val),
    )
    session.add(dataset)
    try:
        session.commit()
    except IntegrityError:
        raise HTTPException(409, f"a dataset named {body.name!r} already exists") from None
    return dataset


@router.get("", response_model=list[DatasetOut], responses=error_responses())
def list_datasets(session: SessionDep, page: PageDep) -> list[Dataset]:
    """Datasets by id, ``limit`` (default 50) from ``offset``."""
    return list(session.scalars(page.apply(select(Dataset).order_by(Dataset.id))))


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(404))
def get_dataset(dataset_id: PathId, session: SessionDep) -> Dataset:
    return get_or_404(session, Dataset, dataset_id)
