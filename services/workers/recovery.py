"""Recovery of jobs whose worker was lost (killed, out of memory, its machine gone).

Every worker runs ``watch`` in a thread: at start and then twice per lease it queues again the
running jobs whose lease lapsed, each with the rest of its round, as a new chain. Neither broker
gives such a task back in time by itself: kombu's SQLAlchemy transport never re-delivers a
message its consumer took, and Redis does so only after the visibility timeout (24 h).
"""

from __future__ import annotations

import logging
import threading

from kombu.exceptions import OperationalError as BrokerError

from services.api.db import session_scope
from services.api.models import FAILED
from services.api.settings import Settings
from services.workers import dispatch, jobs

CHECKS_PER_LEASE = 2

log = logging.getLogger(__name__)


def recover_lost_jobs(settings: Settings) -> int:
    """Queue the lost jobs again (a round whose chain cannot be sent fails); returns how many were lost."""
    with session_scope(settings.database_url) as session:
        chains = jobs.recover_lost(session, settings.job_lease_s)
    for chain in chains:
        lost = chain[0]
        log.warning("job %s (%s) lost its worker; queued again", lost.id, lost.stage)
        try:
            dispatch.enqueue(chain)
        except (BrokerError, OSError) as exc:
            log.exception("cannot enqueue round %s again", lost.round_id)
            with session_scope(settings.database_url) as session:
                jobs.stop_round(session, lost.round_id, FAILED, f"not run: broker unreachable ({type(exc).__name__})")
    return len(chains)


def watch(settings: Settings, stop: threading.Event) -> None:
    """Recover lost jobs now and every half lease until ``stop`` is set (errors are logged, not raised)."""
    while True:
        try:
            recover_lost_jobs(settings)
        except Exception:
            log.exception("recovering lost jobs failed")
        if stop.wait(settings.job_lease_s / CHECKS_PER_LEASE):
            return
