"""One Celery task per stage of a round, each a thin wrapper over the backend's ``run_stage``.

A task takes its Job id. It claims the job (skipping one that already ended: a re-delivered task
does nothing twice), runs the stage with a progress callback on the Job row while a thread renews
the job's lease, records the outputs as Artifact rows (and Metric rows when the stage wrote
metrics) and marks the job done. Stages are idempotent, so a task re-delivered after a lost worker
finds the finished outputs. A task that finished its job sends the round's next job (through the
outbox of ``services.common.jobs``: if the worker dies before the send, the recovery loop sends it);
one that failed, was cancelled, or did not claim its job (it had ended, another attempt holds it, an
earlier stage has not succeeded) sends nothing.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from services.common import jobs, scratch
from services.common import store as store_files
from services.common.db import session_scope
from services.common.models import CANCELLED, FAILED, SUCCEEDED
from services.common.paths import weights_file
from services.common.scratch import open_store
from services.common.settings import get_settings
from services.workers import backend, recovery, retention
from services.workers.celery_app import app, stage_task_name
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.profiles import WEIGHTS_FIELD
from wsis_core.rounds import STAGES

HEARTBEATS_PER_LEASE = 4

log = logging.getLogger(__name__)


def run_job(job_id: int, task_id: str | None) -> str:
    """Run the stage of job ``job_id``; returns the job's final status, or SKIPPED / HELD / BLOCKED if it was not
    claimed."""
    settings = get_settings()
    device = str(resolve_device("auto"))  # cuda when this worker has a GPU, else cpu
    with session_scope(settings.database_url) as session:
        ctx = jobs.start(session, job_id, task_id, f"running on {device}", settings.job_lease_s, settings.max_attempts,
                         device=device)
    if isinstance(ctx, str):
        return ctx
    rounds = backend.load()
    store = open_store(settings)
    mirror = scratch.run_mirror(settings, store, ctx.run_id)
    try:
        with leased(settings.database_url, ctx, settings.job_lease_s / HEARTBEATS_PER_LEASE):
            # object storage: stage the run's objects into this host's scratch, run there, upload what changed
            before = mirror.sync() if mirror else {}
            run_dir = mirror.folder if mirror else store_files.run_dir(store.local_root, ctx.run_id)
            outputs = rounds.run_stage(
                ctx.stage, data=scratch.dataset_folder(settings, ctx.dataset_path), run_dir=run_dir,
                round_number=ctx.round_number, config=_with_weights_file(settings, ctx.config), device=device,
                on_progress=jobs.ProgressReporter(settings.database_url, ctx),
            )
            if mirror:
                mirror.publish(before)  # before the rows: an Artifact row names an object that is in the bucket
        records = [store_files.describe(store.local_root, kind, path) for kind, path in outputs.items()]
        metrics = rounds.round_metrics(run_dir, ctx.round_number) if "metrics" in outputs else {}
        metrics = {str(name): None if value is None else float(value) for name, value in metrics.items()}
        message = rounds.stage_message(run_dir, ctx.round_number, ctx.stage) or "done"
        with session_scope(settings.database_url) as session:
            status = jobs.finish(session, ctx, records, metrics, message)
    except jobs.JobCancelled:
        return CANCELLED
    except WsisInputError as exc:
        _record_failure(settings.database_url, ctx, settings.masked(str(exc)))
        return FAILED
    except Exception as exc:
        _record_failure(settings.database_url, ctx, settings.masked(f"{type(exc).__name__}: {exc}"))
        raise
    if status == SUCCEEDED:
        if settings.keep_models == "needed":
            retention.drop_unneeded_checkpoints(settings, store, ctx.run_id)
        recovery.send_next(settings, ctx.run_id, ctx.round_number)
    return status


def _with_weights_file(settings, config: dict) -> dict:
    """``config`` with its ``backbone.weights`` override (relative to WSIS_WEIGHTS_ROOT) as the confined absolute
    file, checked again here: the folder may have changed since the run was created."""
    name = config.get("overrides", {}).get(WEIGHTS_FIELD)
    if name is None:
        return config
    return {**config, "overrides": {**config["overrides"], WEIGHTS_FIELD: str(weights_file(settings, name))}}


@contextmanager
def leased(database_url: str, ctx: jobs.JobContext, interval_s: float) -> Iterator[None]:
    """Renew the job's lease every ``interval_s`` from a thread while the block runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(interval_s):
            try:
                with session_scope(database_url) as session:
                    if not jobs.heartbeat(session, ctx):
                        return  # the job ended, or another attempt took it over
            except Exception:  # the database may come back before the lease lapses
                log.exception("job %s: heartbeat failed", ctx.job_id)

    thread = threading.Thread(target=renew, name=f"lease-job-{ctx.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _record_failure(database_url: str, ctx: jobs.JobContext, error: str) -> None:
    log.warning("job %s (%s) failed: %s", ctx.job_id, ctx.stage, error)
    with session_scope(database_url) as session:
        jobs.fail(session, ctx, error)


def _stage_task(stage: str):
    @app.task(name=stage_task_name(stage), bind=True, acks_late=True, reject_on_worker_lost=True)
    def stage_task(self, job_id: int) -> str:
        return run_job(job_id, self.request.id)

    stage_task.__doc__ = f"Run the {stage!r} stage of a round for Job ``job_id``."
    return stage_task


STAGE_TASKS = {stage: _stage_task(stage) for stage in STAGES}
