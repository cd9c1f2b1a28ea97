"""Runs: create, list, show; launch the next round; metrics of every round."""

from __future__ import annotations

import logging
import shutil

from fastapi import APIRouter, HTTPException, Request, Response
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from services.api.deps import (
    GUARDED,
    Mutating,
    PageDep,
    PathId,
    SessionDep,
    SettingsDep,
    error_responses,
    get_or_404,
    read_in_thread,
)
from services.api.schemas import RoundMetrics, RoundOut, RunCreate, RunOut
from services.common import jobs
from services.common.models import ACTIVE_STATUSES, FAILED, SUCCEEDED, Dataset, Metric, Round, Run
from services.common.paths import weights_file
from services.common.scratch import open_store
from services.common.store import run_dir, run_prefix
from services.workers import dispatch
from wsis_core.errors import WsisInputError
from wsis_core.profiles import WEIGHTS_FIELD

router = APIRouter(prefix="/runs", tags=["runs"])
log = logging.getLogger(__name__)


@router.post(
    "", status_code=201, response_model=RunOut, dependencies=Mutating, responses=error_responses(400, *GUARDED, 404)
)
def create_run(body: RunCreate, session: SessionDep, settings: SettingsDep) -> Run:
    """Create a run; 400 if its ``backbone.weights`` override is no file inside WSIS_WEIGHTS_ROOT."""
    get_or_404(session, Dataset, body.dataset_id)
    weights = body.config.overrides.get(WEIGHTS_FIELD)
    if weights is not None:
        try:
            weights_file(settings, weights)
        except WsisInputError as exc:
            raise HTTPException(400, str(exc)) from None
    run = Run(dataset_id=body.dataset_id, config=body.config.model_dump(), rounds_to_launch=body.rounds_to_launch)
    session.add(run)
    session.commit()
    return run


@router.get("", response_model=list[RunOut], responses=error_responses())
async def list_runs(request: Request, page: PageDep) -> list[RunOut]:
    """Runs by id, ``limit`` (default 50) from ``offset``."""

    def read(session: Session) -> list[RunOut]:
        runs = session.scalars(page.apply(select(Run).options(selectinload(Run.rounds)).order_by(Run.id)))
        return [RunOut.model_validate(run) for run in runs]

    return await read_in_thread(request, read)


@router.get("/{run_id}", response_model=RunOut, responses=error_responses(404))
async def get_run(run_id: PathId, request: Request) -> RunOut:
    options = [joinedload(Run.rounds)]
    return await read_in_thread(
        request, lambda session: RunOut.model_validate(get_or_404(session, Run, run_id, options=options))
    )


@router.post(
    "/{run_id}/rounds", status_code=202, response_model=RoundOut, dependencies=Mutating,
    responses=error_responses(*GUARDED, 404, 409, 503),
)
def launch_round(run_id: PathId, session: SessionDep, settings: SettingsDep) -> Round:
    """Queue the next round (or, after a failed or cancelled round, that round's unfinished jobs again).

    Stages whose artifacts were deleted from the store run again first, in their own rounds (a succeeded
    latest round that lost an artifact is rebuilt instead of starting the next one). 409 while a round of
    the run is queued or running (also to all but one of concurrent launches); 503 if the broker cannot
    be reached.
    """
    run = get_or_404(session, Run, run_id, lock=True)  # PostgreSQL: concurrent launches of one run wait in line
    latest = session.scalar(select(Round).where(Round.run_id == run_id).order_by(Round.number.desc()).limit(1))
    if latest is not None and latest.status in ACTIVE_STATUSES:
        raise HTTPException(409, f"round {latest.number} of run {run_id} is still {latest.status}")
    retry = latest is not None and latest.status != SUCCEEDED
    rebuilt = jobs.requeue_lost_artifacts(session, run_id, open_store(settings))
    if rebuilt is None:
        raise HTTPException(409, f"run {run_id} is already being relaunched")
    if retry:
        if not jobs.requeue(session, latest.id):  # a concurrent retry won the conditional UPDATE
            raise HTTPException(409, f"round {latest.number} of run {run_id} is already being retried")
        round_id = latest.id
    elif latest is not None and latest.id in rebuilt:
        round_id = latest.id
    else:
        round_id = jobs.new_round(session, run, dispatch.stage_plan(run.config["supervision"])).id
    involved = [*rebuilt, round_id] if round_id not in rebuilt else rebuilt
    try:
        session.commit()
    except IntegrityError:  # a concurrent request created the same round first
        raise HTTPException(409, f"a round of run {run_id} is already being launched") from None
    claims = [jobs.claim_dispatch(session, id_) for id_ in involved]  # the outbox marks just written
    session.commit()
    try:
        dispatch.enqueue(claims[0].jobs)  # the first job; each worker sends the next (the rounds run in order)
    except (BrokerError, OSError) as exc:
        log.exception("cannot enqueue round %s", round_id)
        for id_ in involved:
            jobs.stop_round(session, id_, FAILED, f"not run: broker unreachable ({type(exc).__name__})")
        session.commit()
        raise HTTPException(503, f"the task broker is unreachable ({type(exc).__name__}); try again") from None
    for claim in claims:
        jobs.mark_dispatched(session, claim)
    session.commit()
    session.expire_all()
    return session.get(Round, round_id)


@router.delete("/{run_id}", status_code=204, dependencies=Mutating, responses=error_responses(*GUARDED, 404, 409))
def delete_run(run_id: PathId, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a run, its rounds, jobs, metrics and artifacts, and its objects in the artifact store (and this
    host's scratch copy). 409 while a round of the run is queued or running (cancel it first)."""
    run = get_or_404(session, Run, run_id, lock=True)
    active = session.scalar(select(Round.number).where(Round.run_id == run_id, Round.status.in_(ACTIVE_STATUSES)))
    if active is not None:
        raise HTTPException(409, f"round {active} of run {run_id} is still active: cancel it first")
    session.delete(run)
    session.commit()
    store = open_store(settings)
    freed = store.delete_prefix(run_prefix(run_id))
    if settings.object_store:
        shutil.rmtree(run_dir(store.local_root, run_id), ignore_errors=True)
    log.info("run %s deleted (%d bytes freed in the store)", run_id, freed)
    return Response(status_code=204)


@router.get("/{run_id}/metrics", response_model=list[RoundMetrics], responses=error_responses(404))
async def run_metrics(run_id: PathId, request: Request) -> list[RoundMetrics]:
    """One row per (round, split) with metrics: ``{"round": k, "round_id", "split", "mAP_r@0.5": ..., ...}``."""

    def read(session: Session) -> list[RoundMetrics]:
        rows: dict[tuple[int, str], RoundMetrics] = {}
        query = (
            select(Round.number, Round.id, Metric.split, Metric.name, Metric.value)
            .join(Metric, Metric.round_id == Round.id)
            .where(Round.run_id == run_id)
            .order_by(Round.number, Metric.split, Metric.id)
        )
        for number, round_id, split, name, value in session.execute(query):
            rows.setdefault((number, split), {"round": number, "round_id": round_id, "split": split})[name] = value
        if not rows:
            get_or_404(session, Run, run_id)  # no metrics yet, or no such run
        return list(rows.values())

    return await read_in_thread(request, read)
