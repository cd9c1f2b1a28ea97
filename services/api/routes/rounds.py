"""Rounds and jobs: status with jobs and metrics, artifacts, the pseudo-label download, job cancel."""

from __future__ import annotations

import stat

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from services.api.deps import GUARDED, Mutating, PathId, SessionDep, error_responses, get_or_404, read_in_thread
from services.api.models import Artifact, Job, Round
from services.api.paths import OutsideRootError, resolve_inside
from services.api.schemas import ArtifactOut, JobOut, RoundOut
from services.api.settings import Settings
from services.workers import jobs

router = APIRouter(tags=["rounds"])
# Files up to this size are sent from memory (read in the request's thread); larger ones are streamed in
# 64 KiB chunks (FileResponse), so a download never holds a large file in memory.
SMALL_FILE_BYTES = 1 << 20


@router.get("/rounds/{round_id}", response_model=RoundOut, responses=error_responses(404))
async def get_round(round_id: PathId, request: Request) -> RoundOut:
    options = [joinedload(Round.jobs), selectinload(Round.metrics)]
    return await read_in_thread(
        request, lambda session: RoundOut.model_validate(get_or_404(session, Round, round_id, options=options))
    )


@router.get("/rounds/{round_id}/artifacts", response_model=list[ArtifactOut], responses=error_responses(404))
async def list_artifacts(round_id: PathId, request: Request) -> list[ArtifactOut]:
    """The round's artifacts; ``missing`` marks those deleted from the store since."""
    root = request.app.state.settings.artifact_root

    def read(session: Session) -> list[ArtifactOut]:
        artifacts = session.scalars(select(Artifact).where(Artifact.round_id == round_id).order_by(Artifact.id)).all()
        if not artifacts:
            get_or_404(session, Round, round_id)  # none yet, or no such round
        return [ArtifactOut.model_validate(artifact).model_copy(
                    update={"missing": not jobs.artifact_exists(root, artifact.path)})
                for artifact in artifacts]

    return await read_in_thread(request, read)


@router.get(
    "/rounds/{round_id}/pseudo-labels",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/json": {}}, "description": "COCO pseudo-label file"},
        304: {"description": "Not modified (``If-None-Match`` matches the ETag)"},
        **error_responses(404),
    },
)
async def download_pseudo_labels(
    round_id: PathId, request: Request, if_none_match: str | None = Header(None)
) -> Response:
    """The round's COCO pseudo labels as an attachment; ``ETag`` is the file's sha256 (``HEAD`` answers the
    headers alone)."""
    settings = request.app.state.settings
    return await read_in_thread(
        request, lambda session: _pseudo_labels_response(session, settings, round_id, if_none_match)
    )


router.add_api_route("/rounds/{round_id}/pseudo-labels", download_pseudo_labels, methods=["HEAD"],
                     include_in_schema=False)


def _pseudo_labels_response(session: Session, settings: Settings, round_id: int, if_none_match: str | None) -> Response:
    found = session.execute(
        select(Artifact.path, Artifact.sha256, Round.run_id, Round.number)
        .join(Round, Round.id == Artifact.round_id)
        .where(Artifact.round_id == round_id, Artifact.kind == "pseudo_labels")
        .order_by(Artifact.id)
        .limit(1)
    ).first()
    if found is None:
        round_ = get_or_404(session, Round, round_id)
        raise HTTPException(404, f"round {round_id} has no pseudo labels (round status: {round_.status})")
    relative, sha256, run_id, number = found
    try:
        path = resolve_inside(settings.artifact_root, relative)
    except OutsideRootError:
        raise HTTPException(404, f"pseudo labels of round {round_id} are outside the artifact store") from None
    try:
        stat_result = path.stat()
    except OSError:
        stat_result = None
    if stat_result is None or not stat.S_ISREG(stat_result.st_mode):
        raise HTTPException(404, f"pseudo labels of round {round_id} are missing from the artifact store")
    etag = f'"{sha256}"'
    if if_none_match is not None and {etag, "*"} & {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    filename = f"run{run_id}_round{number}_pseudo_labels.json"
    if stat_result.st_size <= SMALL_FILE_BYTES:
        return Response(path.read_bytes(), media_type="application/json",
                        headers={"ETag": etag, "Content-Disposition": f'attachment; filename="{filename}"'})
    return FileResponse(path, media_type="application/json", filename=filename, headers={"ETag": etag},
                        stat_result=stat_result)


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
