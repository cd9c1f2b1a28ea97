"""Recovery of jobs whose worker was lost (killed, out of memory, its machine gone).

Every worker runs ``watch`` in a thread: at start and then twice per lease it queues again the
running jobs whose lease lapsed and sends them, and sends the next job of the rounds that were written but
never sent (their sender, the API or a worker, died in between: the outbox of ``services.common.jobs``).
Neither broker gives such a task back in time by itself: kombu's SQLAlchemy transport never
re-delivers a message its consumer took, and Redis does so only after the visibility timeout (24 h).
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready, worker_shutdown
from kombu.exceptions import OperationalError as BrokerError

from services.common import jobs
from services.common.db import session_scope
from services.common.settings import Settings, get_settings
from services.workers import dispatch

CHECKS_PER_LEASE = 2

log = logging.getLogger(__name__)


def recover_lost_jobs(settings: Settings) -> int:
    """Queue the lost jobs again (a job lost WSIS_MAX_ATTEMPTS times fails instead); returns how many rounds were
    queued again and sent."""
    with session_scope(settings.database_url) as session:
        rounds = jobs.recover_lost(session, settings.job_lease_s, settings.max_attempts)
    for round_id in rounds:
        log.warning("round %s lost a worker; its job is queued again", round_id)
        send_round(settings, round_id)  # marked just now: send at once
    return len(rounds)


def send_undispatched(settings: Settings) -> int:
    """Send the queued jobs of rounds whose sender died between writing and sending them (marked undispatched
    for longer than a lease); returns how many rounds were sent."""
    with session_scope(settings.database_url) as session:
        waiting = jobs.pending_dispatch(session, settings.job_lease_s)
    sent = 0
    for round_id in waiting:
        if send_round(settings, round_id, settings.job_lease_s):
            log.warning("round %s was never sent to the broker; sent now", round_id)
            sent += 1
    return sent


def send_next(settings: Settings, run_id: int, round_number: int) -> bool:
    """Send the run's next queued job after a stage of round ``round_number`` finished (``jobs.finish`` marked
    its round); False if nothing waits or it could not be sent (the mark stays for the recovery loop)."""
    with session_scope(settings.database_url) as session:
        round_id = jobs.next_queued_round(session, run_id, round_number)
    return round_id is not None and send_round(settings, round_id)


def send_round(settings: Settings, round_id: int, older_than_s: float | None = None) -> bool:
    """Claim the round's undispatched mark (set more than ``older_than_s`` ago; None: any), send its first
    queued job, clear the mark; False if another sender claimed it or no job waits. The mark stays when the
    broker is unreachable: the next check tries again."""
    with session_scope(settings.database_url) as session:
        claim = jobs.claim_dispatch(session, round_id, older_than_s)
    if claim is None:
        return False
    try:
        if claim.jobs:
            dispatch.enqueue(claim.jobs)
    except (BrokerError, OSError):
        log.exception("cannot enqueue round %s; trying again later", round_id)
        return False
    with session_scope(settings.database_url) as session:
        jobs.mark_dispatched(session, claim)
    return bool(claim.jobs)


def watch(settings: Settings, stop: threading.Event) -> None:
    """Recover lost jobs now and every half lease until ``stop`` is set (errors are logged, not raised)."""
    while True:
        try:
            recover_lost_jobs(settings)
            send_undispatched(settings)
        except Exception:
            log.exception("recovering lost jobs failed")
        if stop.wait(settings.job_lease_s / CHECKS_PER_LEASE):
            return


_stop_watch = threading.Event()


@worker_ready.connect
def _start_watch(**_kwargs) -> None:
    threading.Thread(target=watch, args=(get_settings(), _stop_watch), name="wsis-recovery", daemon=True).start()


@worker_shutdown.connect
def _stop_watch_thread(**_kwargs) -> None:
    _stop_watch.set()
