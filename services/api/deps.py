"""FastAPI dependencies: settings, database session, bearer-token check, id lookup."""

from __future__ import annotations

import hmac
from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.api.schemas import MAX_ID
from services.api.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="WSIS_API_TOKEN, required by mutating routes when it is set")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


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


def get_or_404(session: Session, model, id_: int, lock: bool = False):
    """The row of ``model`` with primary key ``id_`` (``SELECT ... FOR UPDATE`` if ``lock``) or a 404 naming it."""
    row = session.get(model, id_, with_for_update=lock)
    if row is None:
        raise HTTPException(404, f"{model.__name__.lower()} {id_} not found")
    return row


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
Mutating = [Depends(require_token)]
