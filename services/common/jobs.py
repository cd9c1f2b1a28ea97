"""State changes of jobs and rounds, shared by the workers and the API's cancel route.

Every change is a conditional UPDATE (``... WHERE status IN (...)``), so a worker finishing a
stage and a user cancelling it cannot overwrite each other.

The database is the outbox of the broker. The broker holds at most the next job of a round: launching
writes the round's queued jobs and an *undispatched* mark in one transaction, then sends the first job and
clears the mark; a worker that finishes a stage marks the round of the next queued job in the transaction
that records the stage, then sends that job and clears the mark. The recovery loop sends the rounds whose
mark is older than a lease: their sender (the API or a worker) died between writing and sending. A retry is one conditional UPDATE of the round
(``failed``/``cancelled`` to ``queued``), so of concurrent retries exactly one wins on every database.

A running job holds a lease: its worker renews ``heartbeat_at`` (``heartbeat``), and a running job
whose heartbeat is older than the lease was lost with its worker. ``recover_lost`` queues such jobs
again and ``start`` lets a new attempt claim them. Writes of an attempt are fenced by its number
(``attempts``), so an attempt that lost its lease can neither report nor finish its job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from services.common.artifact_store import ArtifactStore
from services.common.db import session_scope
from services.common.models import (
    ACTIVE_STATUSES,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Artifact,
    Job,
    Metric,
    Round,
    Run,
    utcnow,
)
from services.common.store import ArtifactRecord

PROGRESS_STEP = 0.01  # smallest progress change written to the database
CANCEL_CHECK_S = 1.0  # a running stage looks for its cancellation at least this often (at its next step)
SKIPPED = "skipped"  # a task whose job had already ended (a re-delivered task): nothing to do
HELD = "held"  # a task whose job another attempt holds (its lease is live): nothing to do
BLOCKED = "blocked"  # a task whose job waits for an earlier stage that has not succeeded (a duplicate send)
DEFAULT_MAX_ATTEMPTS = 3


class JobCancelled(Exception):
    """Raised inside a stage (from its progress callback) once its job was cancelled or its attempt lost the lease."""


@dataclass(frozen=True)
class JobContext:
    """Everything a task needs to run its stage, read once when the job starts."""

    job_id: int
    stage: str
    round_id: int
    round_number: int
    run_id: int
    config: dict  # the run's config plus the dataset's classes and splits: a wsis_core.round_context.RunConfig dict
    dataset_path: str
    val_split: str | None
    attempt: int  # the job's ``attempts`` after this claim: writes of an earlier attempt are fenced out


def start(session: Session, job_id: int, task_id: str | None, message: str, lease_s: float,
          max_attempts: int = DEFAULT_MAX_ATTEMPTS, device: str | None = None) -> JobContext | str:
    """Claim a queued job whose earlier stages all succeeded, or a running one whose lease lapsed (one more lost
    attempt, below ``max_attempts``), recording the ``device`` it runs on; else SKIPPED (it ended, or is unknown),
    HELD or BLOCKED.

    The claim is one conditional UPDATE, so of two tasks reaching a job (a duplicate send) one runs it, and
    neither runs a stage whose predecessor failed, was cancelled or has not run yet.
    """
    now = utcnow()
    this_round, other_round, earlier = aliased(Round), aliased(Round), aliased(Job)
    predecessors_done = ~exists().where(  # no earlier job of the round, nor any job of an earlier round, unfinished
        this_round.id == Job.round_id, other_round.run_id == this_round.run_id, earlier.round_id == other_round.id,
        or_(other_round.number < this_round.number,
            and_(other_round.id == this_round.id, earlier.position < Job.position)),
        earlier.status != SUCCEEDED,
    )
    lost = and_(Job.status == RUNNING, _lapsed(now, lease_s), Job.lost_attempts + 1 < max_attempts)
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, or_(Job.status == QUEUED, lost), predecessors_done)
        .values(status=RUNNING, attempts=Job.attempts + 1, celery_task_id=task_id, message=message, error=None,
                device=device,
                lost_attempts=Job.lost_attempts + case((Job.status == RUNNING, 1), else_=0),
                started_at=func.coalesce(Job.started_at, now), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    job = session.get(Job, job_id)
    if not claimed:
        if job is not None and job.status == RUNNING:
            return HELD
        return BLOCKED if job is not None and job.status == QUEUED else SKIPPED
    round_ = job.round
    session.execute(
        update(Round).where(Round.id == round_.id, Round.status == QUEUED).values(status=RUNNING, started_at=utcnow())
    )
    run, dataset = round_.run, round_.run.dataset
    config = {**run.config, "classes": list(dataset.classes), "train_split": dataset.train_split,
              "val_split": dataset.val_split}
    return JobContext(job.id, job.stage, round_.id, round_.number, run.id, config, dataset.path, dataset.val_split,
                      job.attempts)


def heartbeat(session: Session, ctx: JobContext) -> bool:
    """Renew the lease of ``ctx``'s attempt; False once the job ended or another attempt took it over."""
    return bool(session.execute(update(Job).where(_held_by(ctx)).values(heartbeat_at=utcnow())).rowcount)


def recover_lost(session: Session, lease_s: float, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[int]:
    """Queue again the running jobs whose lease lapsed (their worker died); returns the ids of their rounds,
    whose queued jobs are to be sent again (each round is marked undispatched: see :func:`pending_dispatch`).

    A job that lost ``max_attempts`` attempts so fails, and its round with it. Two workers recovering at once
    requeue a job only once: the UPDATE re-checks the lapsed lease.
    """
    now = utcnow()
    lost = session.scalars(select(Job).where(Job.status == RUNNING, _lapsed(now, lease_s)).order_by(Job.id)).all()
    rounds = []
    for job in lost:
        still_lost = [Job.id == job.id, Job.status == RUNNING, _lapsed(now, lease_s)]
        if job.lost_attempts + 1 >= max_attempts:
            error = (f"gave up after {job.lost_attempts + 1} attempts: each time its worker was lost (killed, out of "
                     "memory or its machine gone); see WSIS_MAX_ATTEMPTS")
            failed = session.execute(
                update(Job).where(*still_lost)
                .values(status=FAILED, error=error, message="failed", finished_at=now,
                        lost_attempts=Job.lost_attempts + 1)
            ).rowcount
            if failed:
                stop_round(session, job.round_id, FAILED, f"not run: stage {job.stage} failed")
            continue
        requeued = session.execute(
            update(Job).where(*still_lost)
            .values(status=QUEUED, progress=0.0, heartbeat_at=None, lost_attempts=Job.lost_attempts + 1,
                    message=f"queued again: its worker sent no heartbeat for {lease_s:g} s")
        ).rowcount
        if requeued:
            _mark_undispatched(session, job.round_id)
            rounds.append(job.round_id)
    return rounds


def new_round(session: Session, run: Run, plan: list[tuple[str, str]]) -> Round:
    """Add the run's next round with one queued job per ``(stage, queue)`` of ``plan``, marked undispatched.

    Two launches adding the same round number collide on the unique (run, number) key at commit.
    """
    latest = session.scalar(select(func.max(Round.number)).where(Round.run_id == run.id)) or 0
    round_ = Round(run_id=run.id, number=latest + 1, undispatched_since=utcnow())
    round_.jobs = [Job(stage=stage, position=i, queue=queue) for i, (stage, queue) in enumerate(plan)]
    session.add(round_)
    session.flush()
    return round_


def pending_dispatch(session: Session, older_than_s: float) -> list[int]:
    """Ids of the active rounds whose queued jobs have waited more than ``older_than_s`` to be sent (their
    sender died between writing them and sending them)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return list(session.scalars(
        select(Round.id).where(Round.status.in_(ACTIVE_STATUSES), Round.undispatched_since < cutoff).order_by(Round.id)
    ))


@dataclass(frozen=True)
class Dispatch:
    """A claim on a round's undispatched mark: the queued jobs to send, and the mark's value the claim wrote."""

    round_id: int
    since: datetime
    jobs: list[Job]


def claim_dispatch(session: Session, round_id: int, older_than_s: float | None = None) -> Dispatch | None:
    """Renew the round's undispatched mark (if it is older than ``older_than_s``; None: any mark) and return
    the claim with the queued jobs in order, whose first is to be sent; None if another sender renewed the
    mark first (or no mark is set).

    The mark stays until :func:`mark_dispatched` after the send: a sender that dies in between leaves it for
    the next recovery. A job sent twice is harmless: :func:`start` lets one task run it.
    """
    now = utcnow()
    conditions = [Round.id == round_id, Round.status.in_(ACTIVE_STATUSES), Round.undispatched_since.is_not(None)]
    if older_than_s is not None:
        conditions.append(Round.undispatched_since < now - timedelta(seconds=older_than_s))
    if not session.execute(update(Round).where(*conditions).values(undispatched_since=now)).rowcount:
        return None
    return Dispatch(round_id, now, queued_jobs(session, round_id))


def next_queued_round(session: Session, run_id: int, from_number: int) -> int | None:
    """Id of the round (numbered ``from_number`` or later) of the run's next queued job, if any."""
    return session.scalar(
        select(Job.round_id).join(Round, Round.id == Job.round_id)
        .where(Round.run_id == run_id, Round.number >= from_number, Job.status == QUEUED)
        .order_by(Round.number, Job.position).limit(1)
    )


def queued_jobs(session: Session, round_id: int) -> list[Job]:
    """The queued jobs of the round and of the run's later rounds, in the order they run (a round rebuilding a
    lost artifact goes before the later round that needs it)."""
    round_ = session.get(Round, round_id)
    return list(session.scalars(
        select(Job).join(Round, Round.id == Job.round_id)
        .where(Round.run_id == round_.run_id, Round.number >= round_.number, Job.status == QUEUED)
        .order_by(Round.number, Job.position)
    ))


def requeue_lost_artifacts(session: Session, run_id: int, store: ArtifactStore) -> list[int] | None:
    """Queue again, in the run's succeeded rounds, every job whose artifact is gone from the store and the jobs
    after it (their stages run again where their outputs are missing); returns the ids of those rounds in order,
    or None if a concurrent launch requeued one first."""
    missing_stages: dict[int, set[str]] = {}
    rows = session.execute(
        select(Artifact.round_id, Artifact.stage, Artifact.path).join(Round, Round.id == Artifact.round_id)
        .where(Round.run_id == run_id, Round.status == SUCCEEDED)
    )
    for round_id, stage, path in rows:
        if not store.exists(path):
            missing_stages.setdefault(round_id, set()).add(stage)
    rebuilt = []
    for round_id in sorted(missing_stages, key=lambda id_: session.get(Round, id_).number):
        first = session.scalar(select(func.min(Job.position))
                               .where(Job.round_id == round_id, Job.stage.in_(missing_stages[round_id])))
        if first is None:
            continue
        if not session.execute(update(Round).where(Round.id == round_id, Round.status == SUCCEEDED)
                               .values(status=QUEUED, finished_at=None, undispatched_since=utcnow())).rowcount:
            return None
        session.execute(
            update(Job).where(Job.round_id == round_id, Job.position >= first)
            .values(status=QUEUED, progress=0.0, message="queued again: an artifact is missing from the store",
                    error=None, started_at=None, finished_at=None, heartbeat_at=None, lost_attempts=0)
        )
        rebuilt.append(round_id)
    return rebuilt


def mark_dispatched(session: Session, claim: Dispatch) -> None:
    """The claimed job reached the broker: clear the mark, unless a later sender set it again meanwhile (a
    worker that finished the job just sent and marked the round for the next one)."""
    session.execute(update(Round).where(Round.id == claim.round_id, Round.undispatched_since == claim.since)
                    .values(undispatched_since=None))


def _mark_undispatched(session: Session, round_id: int) -> None:
    session.execute(update(Round).where(Round.id == round_id).values(undispatched_since=utcnow()))


def finish(
    session: Session, ctx: JobContext, artifacts: list[ArtifactRecord], metrics: dict[str, float | None],
    message: str = "done",
) -> str:
    """Mark the job, and maybe its round, done with the stage's ``message`` and record its outputs (upserts:
    a re-run never duplicates them); the round of the run's next queued job is marked undispatched (the
    caller sends that job: :func:`claim_dispatch`).

    CANCELLED (nothing recorded) if the job was cancelled meanwhile or another attempt took it over.
    """
    done = session.execute(
        update(Job).where(_held_by(ctx)).values(status=SUCCEEDED, progress=1.0, finished_at=utcnow(), message=message)
    ).rowcount
    if not done:
        return CANCELLED
    for record in artifacts:
        _upsert(session, Artifact, ("round_id", "stage", "kind"), round_id=ctx.round_id, stage=ctx.stage,
                kind=record.kind, path=record.path, size=record.size, sha256=record.sha256, created_at=utcnow())
    for name, value in metrics.items():
        _upsert(session, Metric, ("round_id", "split", "name"), round_id=ctx.round_id, split=ctx.val_split,
                name=name, value=value)
    left = session.scalar(
        select(func.count()).select_from(Job).where(Job.round_id == ctx.round_id, Job.status != SUCCEEDED)
    )
    if not left:
        _close_round(session, ctx.round_id, SUCCEEDED)
        _continue_run(session, ctx)
    following = next_queued_round(session, ctx.run_id, ctx.round_number)
    if following is not None:
        _mark_undispatched(session, following)  # sent by the worker next; by the recovery loop if it dies first
    return SUCCEEDED


def _continue_run(session: Session, ctx: JobContext) -> None:
    """After round k succeeded: queue round k+1 with the same stages when the run's ``rounds_to_launch`` is
    above k and the run has no later round yet (it is sent like any next job: see :func:`finish`)."""
    run = session.get(Run, ctx.run_id)
    later = session.scalar(select(Round.id).where(Round.run_id == ctx.run_id, Round.number > ctx.round_number).limit(1))
    if ctx.round_number >= run.rounds_to_launch or later is not None:
        return
    plan = session.execute(select(Job.stage, Job.queue).where(Job.round_id == ctx.round_id).order_by(Job.position))
    new_round(session, run, [(stage, queue) for stage, queue in plan])


def fail(session: Session, ctx: JobContext, error: str) -> None:
    """Mark the job and its round failed (the round's queued jobs are cancelled), unless the attempt lost the job."""
    failed = session.execute(
        update(Job).where(_held_by(ctx)).values(status=FAILED, error=error, message="failed", finished_at=utcnow())
    ).rowcount
    if failed:
        stop_round(session, ctx.round_id, FAILED, f"not run: stage {ctx.stage} failed")


def cancel(session: Session, job: Job) -> bool:
    """Cancel an active job and with it its round; False if the job had already ended."""
    cancelled = session.execute(
        update(Job).where(Job.id == job.id, Job.status.in_(ACTIVE_STATUSES))
        .values(status=CANCELLED, message="cancelled by user", finished_at=utcnow())
    ).rowcount
    if cancelled:
        stop_round(session, job.round_id, CANCELLED, f"not run: stage {job.stage} was cancelled")
    session.refresh(job)
    return bool(cancelled)


def stop_round(session: Session, round_id: int, status: str, reason: str) -> None:
    """End an active round with ``status`` and cancel its jobs that have not started."""
    session.execute(
        update(Job).where(Job.round_id == round_id, Job.status == QUEUED)
        .values(status=CANCELLED, message=reason, finished_at=utcnow())
    )
    _close_round(session, round_id, status)


def requeue(session: Session, round_id: int) -> bool:
    """Put a failed or cancelled round back in the queue, marked undispatched: its unfinished jobs start again
    (finished ones are kept) with a fresh budget of attempts. False if the round was not failed or cancelled
    (a concurrent retry won: the transition is one conditional UPDATE on every database)."""
    retried = session.execute(
        update(Round).where(Round.id == round_id, Round.status.in_((FAILED, CANCELLED)))
        .values(status=QUEUED, finished_at=None, undispatched_since=utcnow())
    ).rowcount
    if retried:
        session.execute(
            update(Job).where(Job.round_id == round_id, Job.status != SUCCEEDED)
            .values(status=QUEUED, progress=0.0, message=None, error=None, started_at=None, finished_at=None,
                    heartbeat_at=None, lost_attempts=0)
        )
    return bool(retried)


def _lapsed(now: datetime, lease_s: float) -> ColumnElement[bool]:
    """The job's lease lapsed: no heartbeat (nor, for a row without one, a start) within ``lease_s``."""
    return func.coalesce(Job.heartbeat_at, Job.started_at) < now - timedelta(seconds=lease_s)


def _held_by(ctx: JobContext) -> ColumnElement[bool]:
    """The job is still running under ``ctx``'s attempt."""
    return and_(Job.id == ctx.job_id, Job.status == RUNNING, Job.attempts == ctx.attempt)


def _close_round(session: Session, round_id: int, status: str) -> None:
    session.execute(
        update(Round).where(Round.id == round_id, Round.status.in_(ACTIVE_STATUSES))
        .values(status=status, finished_at=utcnow())
    )


def _upsert(session: Session, model, keys: tuple[str, ...], **values) -> None:
    """INSERT, or UPDATE the row with the same ``keys`` (``created_at`` of an existing row is kept)."""
    insert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[session.get_bind().dialect.name]
    statement = insert(model).values(**values)
    changed = {name: statement.excluded[name] for name in values if name not in keys and name != "created_at"}
    session.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changed))


class ProgressReporter:
    """The ``on_progress(done, total=1.0)`` callback of a stage: writes progress, stops a cancelled or lost job.

    Stages call it after every training step or batch. It writes to the database when the progress moved by
    PROGRESS_STEP, and also when CANCEL_CHECK_S passed since its last write whatever the progress (a stage of
    a million steps moves 1 % in hours), so a cancellation stops the stage within about CANCEL_CHECK_S plus
    one step.
    """

    def __init__(self, database_url: str, ctx: JobContext, clock: Callable[[], float] = time.monotonic):
        self.database_url = database_url
        self.ctx = ctx
        self.clock = clock
        self.written = 0.0
        self.checked_at = clock()

    def __call__(self, done: float, total: float = 1.0) -> None:
        fraction = min(max(float(done) / float(total), 0.0), 1.0) if total else 0.0
        due = self.clock() - self.checked_at >= CANCEL_CHECK_S
        if fraction - self.written < PROGRESS_STEP and fraction < 1.0 and not due:
            return
        with session_scope(self.database_url) as session:
            still_running = session.execute(update(Job).where(_held_by(self.ctx)).values(progress=fraction)).rowcount
        self.checked_at = self.clock()
        if not still_running:
            raise JobCancelled(f"job {self.ctx.job_id} was cancelled or taken over by another attempt")
        self.written = fraction
