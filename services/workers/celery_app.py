"""The Celery application: broker and result backend from the settings, late acks, ``cpu``/``gpu`` queues.

Start a worker with ``celery -A services.workers.celery_app worker -Q cpu,gpu --pool solo``. The app includes
the stage tasks (``services.workers.tasks``) and the recovery of lost workers' jobs (``services.workers.recovery``)
by name, so this module imports no other worker module and any of them may import it.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init, worker_ready

from services.common.settings import Settings, get_settings, prepare_folders

CPU_QUEUE, GPU_QUEUE = "cpu", "gpu"
STAGE_TASK_PREFIX = "wsis.stage."  # the Celery task of stage ``s`` is named ``wsis.stage.s``
# Redis re-delivers an unacknowledged task after this long; it must exceed the longest stage. A killed
# worker's job does not wait for it: the job's lease lapses and a live worker queues it again.
VISIBILITY_TIMEOUT_S = 24 * 3600


def configure(app: Celery, settings: Settings) -> None:
    """Point ``app`` at the settings' broker and result backend.

    Pooled broker connections of an earlier configuration are dropped, so a process that
    reconfigures the app (the API factory, tests) publishes to the new broker.
    """
    app.close()
    app.amqp._producer_pool = None
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=CPU_QUEUE,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        # Only Redis knows this option; kombu's SQLAlchemy transport passes options on to create_engine.
        broker_transport_options=(
            {"visibility_timeout": VISIBILITY_TIMEOUT_S} if settings.broker_url.startswith("redis") else {}
        ),
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
    )


app = Celery("wsis", include=["services.workers.tasks", "services.workers.recovery"])
configure(app, get_settings())


@worker_init.connect
def _prepare(**_kwargs) -> None:
    prepare_folders(get_settings())


@worker_ready.connect
def _announce_ready(**_kwargs) -> None:
    ready_file = get_settings().worker_ready_file
    if ready_file is not None:
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        ready_file.touch()


def stage_task_name(stage: str) -> str:
    """Name of the Celery task that runs ``stage`` (tasks are sent by name: the sender needs no task code)."""
    return STAGE_TASK_PREFIX + stage
