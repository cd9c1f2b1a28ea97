"""``GET /api/health``: is the database reachable, is the broker reachable."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text

from services.api.deps import SessionDep
from services.api.schemas import Health
from services.workers.celery_app import app as celery_app

BROKER_TIMEOUT_S = 3

router = APIRouter(tags=["health"])


def _probe(check) -> str:
    try:
        check()
    except Exception as exc:  # any failure means "unreachable"; the class name says why
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _check_broker() -> None:
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)


@router.get(
    "/health", response_model=Health,
    responses={503: {"model": Health, "description": "Database or broker unreachable (status degraded)"}},
)
def health(session: SessionDep, response: Response) -> Health:
    """``status`` is ``ok`` when both the database and the broker answer (else ``degraded``, HTTP 503)."""
    database = _probe(lambda: session.execute(text("SELECT 1")))
    broker = _probe(_check_broker)
    ok = database == broker == "ok"
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "degraded", database=database, broker=broker)
