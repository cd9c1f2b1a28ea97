"""Rounds and jobs: status with jobs and metrics, artifacts, the pseudo-label downloads (three formats), the
model download, job cancel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload
from starlette.concurrency import run_in_threadpool

from services.api.deps import GUARDED, Mutating, PathId, SessionDep, error_responses, get_or_404, read_in_thread
from services.api.downloads import file_download, object_download
from services.api.round_files import (
    MODEL,
    RoundPlace,
    StoredFile,
    local_file,
    locate_round,
    split_images,
    stage_artifact,
    stage_file,
)
from services.api.schemas import ArtifactOut, JobOut, RoundOut
from services.common import jobs
from services.common.models import Artifact, Job, Round
from services.common.scratch import open_store
from services.common.settings import Settings
from wsis_core import exports
from wsis_core.io import atomic_file

router = APIRouter(tags=["rounds"])


@router.get("/rounds/{round_id}", response_model=RoundOut, responses=error_responses(404))
async def get_round(round_id: PathId, request: Request) -> RoundOut:
    options = [joinedload(Round.jobs), selectinload(Round.metrics)]
    return await read_in_thread(
        request, lambda session: RoundOut.model_validate(get_or_404(session, Round, round_id, options=options))
    )


@router.get("/rounds/{round_id}/artifacts", response_model=list[ArtifactOut], responses=error_responses(404))
async def list_artifacts(round_id: PathId, request: Request) -> list[ArtifactOut]:
    """The round's artifacts; ``missing`` marks those deleted from the store since."""
    store = open_store(request.app.state.settings)

    def read(session: Session) -> list[ArtifactOut]:
        artifacts = session.scalars(select(Artifact).where(Artifact.round_id == round_id).order_by(Artifact.id)).all()
        if not artifacts:
            get_or_404(session, Round, round_id)  # none yet, or no such round
        return [ArtifactOut.model_validate(artifact).model_copy(
                    update={"missing": not store.exists(artifact.path)})
                for artifact in artifacts]

    return await read_in_thread(request, read)


ExportFormat = Literal[tuple(exports.FORMATS)]  # an enum in the OpenAPI schema


@router.get(
    "/rounds/{round_id}/pseudo-labels",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/json": {}, "application/zip": {}},
              "description": "Pseudo labels: COCO (RLE masks), COCO with polygons, or a YOLO zip"},
        304: {"description": "Not modified (``If-None-Match`` matches the ETag)"},
        **error_responses(404),
    },
)
async def download_pseudo_labels(
    round_id: PathId, request: Request, if_none_match: str | None = Header(None),
    fmt: ExportFormat = Query("coco", alias="format", description=(
        "coco: the round's file as written (RLE masks); coco-polygon: polygons from the mask contours; yolo: a zip "
        "of labels/<image>.txt, data.yaml and images.txt")),
) -> Response:
    """The round's pseudo labels as an attachment in ``format``; ``ETag``: the file's sha256 (``coco``) or it
    with the format (``"<sha256>-yolo"``); ``HEAD`` answers the headers alone. An export is made on its first
    request and kept in the round's folder."""
    settings = request.app.state.settings
    found = await read_in_thread(request, lambda session: _pseudo_labels_file(session, settings, round_id))
    return await run_in_threadpool(_export_response, settings, found, fmt, if_none_match)


router.add_api_route("/rounds/{round_id}/pseudo-labels", download_pseudo_labels, methods=["HEAD"],
                     include_in_schema=False)


@dataclass(frozen=True)
class _LabelsFile:
    place: RoundPlace
    path: Path
    sha256: str


def _pseudo_labels_file(session: Session, settings: Settings, round_id: int) -> _LabelsFile:
    found = session.execute(
        select(Artifact.path, Artifact.sha256)
        .where(Artifact.round_id == round_id, Artifact.kind == "pseudo_labels")
        .order_by(Artifact.id)
        .limit(1)
    ).first()
    if found is None:
        round_ = get_or_404(session, Round, round_id)
        raise HTTPException(404, f"round {round_id} has no pseudo labels (round status: {round_.status})")
    path = local_file(settings, found.path, found.sha256, f"pseudo labels of round {round_id}")
    return _LabelsFile(locate_round(session, settings, round_id), path, found.sha256)


def _export_response(settings: Settings, found: _LabelsFile, fmt: str, if_none_match: str | None) -> Response:
    place = found.place
    missing = f"pseudo labels of round {place.round_id} are missing from the artifact store"
    filename = f"run{place.run_id}_round{place.number}_pseudo_labels"
    if fmt == "coco":
        return file_download(found.path, f'"{found.sha256}"', f"{filename}.json", "application/json", if_none_match,
                             missing)
    if not found.path.is_file():
        raise HTTPException(404, missing)
    suffix = exports.SUFFIXES[fmt]
    path = place.folder / "exports" / f"{found.sha256[:16]}-{fmt}{suffix}"
    if not path.is_file():
        images = split_images(place.dataset_root, place.train_split)
        paths = {image_id: info.path.relative_to(place.dataset_root).as_posix() for image_id, info in images.items()}
        with atomic_file(path) as handle:
            exports.export(found.path, fmt, handle, paths)
    return file_download(path, f'"{found.sha256}-{fmt}"', f"{filename}_{fmt}{suffix}", exports.MEDIA_TYPES[fmt],
                         if_none_match, missing)


@router.get(
    "/rounds/{round_id}/model",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The IS branch's checkpoint (model.pt)"},
        304: {"description": "Not modified (``If-None-Match`` matches the ETag)"},
        **error_responses(404, 409),
    },
)
async def download_model(round_id: PathId, request: Request, if_none_match: str | None = Header(None)) -> Response:
    """The round's trained IS branch (``model.pt`` of its is_train stage: state_dict, profile, classes) as an
    attachment; ``ETag``: its sha256; ``HEAD`` answers the headers alone. 409 until is_train finished."""
    settings = request.app.state.settings

    name, missing = "run{}_round{}_model.pt", f"model of round {round_id} is missing from the artifact store"
    if settings.object_store:  # streamed from the bucket in chunks: constant memory whatever the checkpoint's size
        def find(session: Session):
            return locate_round(session, settings, round_id), stage_artifact(session, settings, round_id, MODEL, "model")

        place, row = await read_in_thread(request, find)
        return await run_in_threadpool(
            object_download, open_store(settings), row.path, row.size, f'"{row.sha256}"',
            name.format(place.run_id, place.number), "application/octet-stream", if_none_match, missing)

    def read(session: Session) -> tuple[RoundPlace, StoredFile]:
        return locate_round(session, settings, round_id), stage_file(session, settings, round_id, MODEL, "model")

    place, model = await read_in_thread(request, read)
    return await run_in_threadpool(
        file_download, model.path, f'"{model.sha256}"', name.format(place.run_id, place.number),
        "application/octet-stream", if_none_match, missing)


router.add_api_route("/rounds/{round_id}/model", download_model, methods=["HEAD"], include_in_schema=False)


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobOut, dependencies=Mutating, responses=error_responses(*GUARDED, 404, 409)
)
def cancel_job(job_id: PathId, session: SessionDep) -> Job:
    """Cancel a queued or running job; its round is cancelled and its later jobs never start. 409 if it ended."""
    job = get_or_404(session, Job, job_id)
    if not jobs.cancel(session, job):
        raise HTTPException(409, f"job {job_id} already {job.status}")
    session.commit()
    return job
