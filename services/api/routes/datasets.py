"""Datasets: register a folder under ``WSIS_DATA_ROOT`` or upload a zip of one (checked with the
weak-dataset reader, with a per-split ground-truth report), list, show."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.api import uploads
from services.api.deps import GUARDED, Mutating, PageDep, PathId, SessionDep, SettingsDep, error_responses, get_or_404
from services.api.schemas import UPLOAD_NAME_PATTERN, DatasetCreate, DatasetOut
from services.common.models import Dataset
from services.common.paths import OutsideRootError, UnresolvablePathError, relative_inside, resolve_inside
from services.common.scratch import confined_dataset_url, dataset_folder
from services.common.settings import Settings
from wsis_core.data.dataset import SplitSummary, dataset_splits, open_ground_truth
from wsis_core.errors import WsisInputError

router = APIRouter(prefix="/datasets", tags=["datasets"])
MAX_PATH_CHARS = 1000  # the column's width (Dataset.path)

DEFAULT_VAL_SPLIT = "val"
UPLOADS_FOLDER = "uploads"


def _inspect(root: Path, train_split: str, val_split: str, val_named: bool) -> tuple[str | None, dict, list[str]]:
    """Read the dataset's splits once each (train's images, labels and classes; val's, where it exists): the
    val split to store (None: the default ``val`` is absent, so rounds run without evaluation), the
    ground-truth report per split and the classes. WsisInputError on an unreadable dataset."""
    train = open_ground_truth(root, train_split)  # reads the weak view too: every image, every label
    report = {"train": SplitSummary.of(train).to_dict()}
    if not val_named and val_split not in dataset_splits(root):
        return None, {**report, "val": None}, list(train.classes)
    return val_split, {**report, "val": SplitSummary.of(open_ground_truth(root, val_split)).to_dict()}, list(train.classes)


def register(session: Session, settings: Settings, name: str, root: Path, train_split: str, val_split: str,
             val_named: bool, url: str | None = None) -> Dataset:
    """Validate the folder ``root`` (the scratch mirror of ``url`` for a dataset on object storage) and add its
    Dataset row (400 unreadable, 409 name taken)."""
    relative = url or relative_inside(settings.data_root, root)
    if len(relative) > MAX_PATH_CHARS:
        raise HTTPException(400, f"path {relative!r} resolves to more than {MAX_PATH_CHARS} characters")
    try:
        stored_val, report, classes = _inspect(root, train_split, val_split, val_named)
    except (WsisInputError, OSError) as exc:
        raise HTTPException(400, f"not a usable dataset: {settings.masked(str(exc))}") from None
    dataset = Dataset(
        name=name, path=relative, train_split=train_split, val_split=stored_val,
        classes=classes, num_train_images=report["train"]["images"],
        num_val_images=report["val"]["images"] if report["val"] else 0, ground_truth=report,
    )
    session.add(dataset)
    try:
        session.commit()
    except IntegrityError:
        raise HTTPException(409, f"a dataset named {name!r} already exists") from None
    return dataset


@router.post(
    "", status_code=201, response_model=DatasetOut, dependencies=Mutating,
    responses=error_responses(400, *GUARDED, 409),
)
def create_dataset(body: DatasetCreate, session: SessionDep, settings: SettingsDep) -> Dataset:
    """Register a dataset; 400 if its path leaves WSIS_DATA_ROOT or the folder is not a readable dataset.
    Without an explicit ``val_split``, a dataset with no split ``val`` registers without one (no evaluation).
    An ``s3://bucket/prefix`` path (under WSIS_DATA_URL, keys confined like paths) is read through the scratch."""
    if body.path.startswith("s3://"):
        try:
            url = confined_dataset_url(settings, body.path)
            root = dataset_folder(settings, url)
        except OutsideRootError as exc:
            raise HTTPException(400, f"path {body.path!r}: {exc}") from None
        except (BotoCoreError, ClientError) as exc:
            raise HTTPException(400, f"path {body.path!r} cannot be read: {type(exc).__name__}") from None
        return register(session, settings, body.name, root, body.train_split, body.val_split,
                        val_named="val_split" in body.model_fields_set, url=url)
    try:
        root = resolve_inside(settings.data_root, body.path)
    except UnresolvablePathError:
        raise HTTPException(400, f"path {body.path!r} cannot be resolved (a symlink loop?)") from None
    except OutsideRootError:
        raise HTTPException(400, f"path {body.path!r} is outside WSIS_DATA_ROOT") from None
    return register(session, settings, body.name, root, body.train_split, body.val_split,
                    val_named="val_split" in body.model_fields_set)


@router.post(
    "/upload", status_code=201, response_model=DatasetOut, dependencies=Mutating,
    responses=error_responses(400, *GUARDED, 409, validation=False),
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["name", "file"],
        "properties": {
            "name": {"type": "string", "pattern": UPLOAD_NAME_PATTERN, "description": "dataset name (also its folder)"},
            "file": {"type": "string", "format": "binary", "description": "a .zip of a tagged, VOC or COCO layout"},
            "train_split": {"type": "string"}, "val_split": {"type": "string"},
        },
    }}}}},
)
async def upload_dataset(request: Request, session: SessionDep, settings: SettingsDep) -> Dataset:
    """Upload a zip of any of the three layouts (multipart fields ``name`` and ``file``): streamed to
    ``WSIS_DATA_ROOT/uploads/<name>/`` under ``WSIS_MAX_UPLOAD_MB`` (413 past it), unpacked with unsafe
    entries refused (400), validated and registered as by ``POST /api/datasets``. Nothing is left behind
    when any step fails."""
    folder = settings.data_root / UPLOADS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    incoming = folder / f".incoming-{uuid.uuid4().hex}"
    archive = incoming.with_suffix(".zip")
    limit = settings.max_upload_mb * 2**20
    try:
        if int(request.headers.get("content-length") or 0) > limit:
            raise uploads.UploadTooLarge(f"upload larger than {settings.max_upload_mb} MB (WSIS_MAX_UPLOAD_MB)")
        upload = uploads.MultipartUpload(request.headers.get("content-type", ""), archive, limit)
        await upload.consume(request.stream())
        name = upload.fields.get("name", "")
        if not upload.has_file or not name:
            raise WsisInputError("multipart fields 'name' and 'file' are required")
        if not _is_upload_name(name):
            raise WsisInputError(f"name {name!r}: letters, digits, '.', '_' and '-' only (it names the folder)")
        target = folder / name
        if target.exists() or session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
            raise HTTPException(409, f"a dataset named {name!r} already exists")
        incoming.mkdir()
        await run_in_threadpool(uploads.unpack, archive, incoming, limit)
        root = uploads.dataset_folder(incoming)
        train_split = upload.fields.get("train_split") or "train"
        val_split = upload.fields.get("val_split") or DEFAULT_VAL_SPLIT
        try:
            incoming.rename(target)
        except OSError:  # another upload of the same name won the race
            raise HTTPException(409, f"a dataset named {name!r} already exists") from None
        root = target / root.relative_to(incoming)
        try:
            return await run_in_threadpool(register, session, settings, name, root, train_split, val_split,
                                           "val_split" in upload.fields)
        except HTTPException:  # not a usable dataset, or the name was taken meanwhile
            uploads.remove(target)
            raise
    except uploads.UploadTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except WsisInputError as exc:
        message = settings.masked(str(exc).replace(str(incoming), "<archive>"))
        raise HTTPException(400, f"not a usable dataset upload: {message}") from None
    finally:
        uploads.remove(archive)
        uploads.remove(incoming)


def _is_upload_name(name: str) -> bool:
    return re.fullmatch(UPLOAD_NAME_PATTERN, name) is not None


@router.get("", response_model=list[DatasetOut], responses=error_responses())
def list_datasets(session: SessionDep, page: PageDep) -> list[Dataset]:
    """Datasets by id, ``limit`` (default 50) from ``offset``."""
    return list(session.scalars(page.apply(select(Dataset).order_by(Dataset.id))))


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(404))
def get_dataset(dataset_id: PathId, session: SessionDep) -> Dataset:
    return get_or_404(session, Dataset, dataset_id)
