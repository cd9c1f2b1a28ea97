"""FastAPI dependencies: settings, database session, bearer-token check, id lookup."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterator, Sequence, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.api.schemas import MAX_ID, ErrorOut, ValidationErrorOut
from services.common.settings import Settings

DEFAULT_PAGE, MAX_PAGE = 50, 500  # items of a list route
_bearer = HTTPBearer(auto_error=False, description="WSIS_API_TOKEN, required by mutating routes when it is set")


ERROR_DESCRIPTIONS = {
    400: "Bad request (or a body that cannot be parsed)", 401: "Missing or wrong bearer token",
    403: "Cross-site request (Origin is not this host)", 404: "Not found", 409: "Conflict",
    413: "Request body larger than WSIS_MAX_JSON_KB (an upload: WSIS_MAX_UPLOAD_MB)", 415: "Content-Type is not application/json",
    503: "Service unavailable",
}
GUARDED = (401, 403, 413, 415)  # answers of the request guards to any write (services/api/guards.py)


def error_responses(*codes: int, validation: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route: ``codes`` with an ``ErrorOut`` body, plus our 422 body if ``validation``."""
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]} for code in codes
    }
    if validation:
        responses[422] = {"model": ValidationErrorOut, "description": "Validation error"}
    return responses


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


T = TypeVar("T")


async def read_in_thread(request: Request, read: Callable[[Session], T]) -> T:
    """``read(session)`` in one worker thread, the session closed before it returns, shared through the
    app's :class:`~services.api.read_cache.ReadCache` with the other requests for the same resource.

    For the read routes that clients poll (``async def`` routes): one thread hop per request instead of
    four (session dependency in and out, route, response validation), and a pooled connection is held
    only while the thread runs. ``read`` loads everything the response needs (eager loads, or a
    response model built inside the session).
    """

    def run() -> T:
        with request.app.state.sessionmaker() as session:
            return read(session)

    key = (request.method, request.url.path, request.url.query, request.headers.get("if-none-match"))
    return await request.app.state.read_cache.get(key, lambda: run_in_threadpool(run))


def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless ``Authorization: Bearer <WSIS_API_TOKEN>`` (no check when no token is configured)."""
    if settings.api_token is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, settings.api_token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def get_or_404(session: Session, model, id_: int, lock: bool = False, options: Sequence = ()):
    """The row of ``model`` with primary key ``id_`` (``SELECT ... FOR UPDATE`` if ``lock``; loader ``options``)
    or a 404 naming it."""
    row = session.get(model, id_, with_for_update=lock, options=options)
    if row is None:
        raise HTTPException(404, f"{model.__name__.lower()} {id_} not found")
    return row


@dataclass(frozen=True)
class Page:
    """``?limit=&offset=`` of a list route."""

    limit: int
    offset: int

    def apply(self, query: Select) -> Select:
        return query.limit(self.limit).offset(self.offset)


def get_page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many items")] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="items skipped")] = 0,
) -> Page:
    return Page(limit, offset)


SessionDep = Annotated[Session, Depends(get_session)]
PageDep = Annotated[Page, Depends(get_page)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
Mutating = [Depends(require_token)]
