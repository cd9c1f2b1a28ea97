"""Launching a round: its stage plan (order and queue of each stage) and the Celery chain of its jobs."""

from __future__ import annotations

from celery import chain

from services.api.models import Job
from services.workers import backend
from services.workers.celery_app import CPU_QUEUE, GPU_QUEUE
from services.workers.tasks import STAGE_TASKS


def stage_plan(supervision: str) -> list[tuple[str, str]]:
    """``(stage, queue)`` of every stage of a round, in order; GPU stages go to the ``gpu`` queue.

    A ``full`` supervision run has the backend's FULL_SUPERVISION_STAGES, a weak one its STAGES.
    """
    rounds = backend.load()
    stages = rounds.FULL_SUPERVISION_STAGES if supervision == "full" else rounds.STAGES
    unknown = [stage for stage in stages if stage not in STAGE_TASKS]
    if unknown:
        raise RuntimeError(f"no Celery task for stage(s) {', '.join(unknown)} of {rounds.__name__}")
    return [(stage, GPU_QUEUE if stage in rounds.GPU_STAGES else CPU_QUEUE) for stage in stages]


def enqueue(round_jobs: list[Job]) -> None:
    """Send the jobs (in order) as one Celery chain: each stage starts when the one before it returned."""
    chain(*(STAGE_TASKS[job.stage].si(job.id).set(queue=job.queue) for job in round_jobs)).apply_async()
