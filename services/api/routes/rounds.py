"""Rounds and jobs: status with jobs and metrics, artifacts, the pseudo-label download, job cancel."""

from __future__ import annotations

from fastapi import APIRouter, Header, HTTPException, Response
from fastapi.responses import FileResponse
from sqlalchemy import select

from services.api.deps import Mutating, PathId, SessionDep, SettingsDep, error_responses, get_or_404
from services.api.models import Artifact, Job, Round
from services.api.paths import OutsideRootError, resolve_inside
from services.api.schemas import ArtifactOut, JobOut, RoundOut
from services.workers import jobs

router = APIRouter(tags=["rounds"])


@router.get("/rounds/{round_id}", response_model=RoundOut, responses=error_responses(404))
def get_round(round_id: PathId, session: SessionDep) -> Round:
    return get_or_404(session, Round, round_id)


@router.get("/rounds/{round_id}/artifacts", response_model=list[ArtifactOut], responses=error_responses(404))
def list_artifacts(round_id: PathId, session: SessionDep) -> list[Artifact]:
    return get_or_404(session, Round, round_id).artifacts


@router.get(
    "/rounds/{round_id}/pseudo-labels",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/json": {}}, "description": "COCO pseudo-label file"},
        304: {"description": "Not modified (``If-None-Match`` matches the ETag)"},
        **error_responses(404),
    },
)
def download_pseudo_labels(
    round_id: PathId, session: SessionDep, settings: SettingsDep, if_none_match: str | None = Header(None)
) -> Response:
    """The round's COCO pseudo labels as an attachment; ``ETag`` is the file's sha256."""
    round_ = get_or_404(session, Round, round_id)
    artifact = session.scalars(
        select(Artifact).where(Artifact.round_id == round_id, Artifact.kind == "pseudo_labels").order_by(Artifact.id)
    ).first()
    if artifact is None:
        raise HTTPException(404, f"round {round_id} has no pseudo labels (round status: {round_.status})")
    try:
        path = resolve_inside(settings.artifact_root, artifact.path)
    except OutsideRootError:
        raise HTTPException(404, f"pseudo labels of round {round_id} are outside the artifact store") from None
    if not path.is_file():
        raise HTTPException(404, f"pseudo labels of round {round_id} are missing from the artifact store")
    etag = f'"{artifact.sha256}"'
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers={"ETag": etag})
    filename = f"run{round_.run_id}_round{round_.number}_pseudo_labels.json"
    return FileResponse(path, media_type="application/json", filename=filename, headers={"ETag": etag})


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobOut, dependencies=Mutating, responses=error_responses(401, 404, 409)
)
def cancel_job(job_id: PathId, session: SessionDep) -> Job:
    """Cancel a queued or running job; its round is cancelled and its later jobs never start. 409 if it ended."""
    job = get_or_404(session, Job, job_id)
    if not jobs.cancel(session, job):
        raise HTTPException(409, f"job {job_id} already {job.status}")
    session.commit()
    return job
