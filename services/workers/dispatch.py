"""Launching a round: its stage plan (order and queue of each stage) and the Celery task of its next job."""

from __future__ import annotations

from services.common.models import Job
from services.workers import backend
from services.workers.celery_app import CPU_QUEUE, GPU_QUEUE, app, stage_task_name
from wsis_core.rounds import STAGES


def stage_plan(supervision: str) -> list[tuple[str, str]]:
    """``(stage, queue)`` of every stage of a round, in order; GPU stages go to the ``gpu`` queue.

    A ``full`` supervision run has the backend's FULL_SUPERVISION_STAGES, a weak one its STAGES.
    """
    rounds = backend.load()
    stages = rounds.FULL_SUPERVISION_STAGES if supervision == "full" else rounds.STAGES
    unknown = [stage for stage in stages if stage not in STAGES]  # services.workers.tasks has one task per stage
    if unknown:
        raise RuntimeError(f"no Celery task for stage(s) {', '.join(unknown)} of {rounds.__name__}")
    return [(stage, GPU_QUEUE if stage in rounds.GPU_STAGES else CPU_QUEUE) for stage in stages]


def enqueue(queued: list[Job]) -> None:
    """Send the first of ``queued`` (the jobs of a round in order) to its queue; the worker that finishes it
    sends the next one (``services.workers.tasks``), so the broker never holds a job the database gave up."""
    first = queued[0]
    app.signature(stage_task_name(first.stage), args=(first.id,), immutable=True).set(queue=first.queue).apply_async()
