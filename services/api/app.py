"""The FastAPI application: ``uvicorn --factory services.api.app:create_app`` (OpenAPI at ``/docs``, served offline)."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from services.api.guards import RequestGuard
from services.api.read_cache import InvalidateOnWrite, ReadCache
from services.api.routes import datasets, docs, health, review, rounds, runs
from services.common.db import sessionmaker_for
from services.common.settings import Settings, get_settings, prepare_folders
from services.workers import backend
from services.workers.celery_app import app as celery_app
from services.workers.celery_app import configure

STATIC_DIR = Path(__file__).resolve().parent / "static"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_ERRORS, MAX_ERROR_CHARS = 20, 200  # a 422 lists at most this many errors, each cut to this length


def _readable(exc: RequestValidationError) -> JSONResponse:
    """422 with one readable line (``body.config.profile: unknown profile ...``) plus the structured list."""
    all_errors = exc.errors()
    errors = [
        {"loc": [str(part)[:MAX_ERROR_CHARS] for part in error["loc"]], "msg": error["msg"][:MAX_ERROR_CHARS]}
        for error in all_errors[:MAX_ERRORS]
    ]
    detail = "; ".join(f"{'.'.join(error['loc'])}: {error['msg']}" for error in errors)
    if len(all_errors) > MAX_ERRORS:
        detail += f" (and {len(all_errors) - MAX_ERRORS} more)"
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


def _methods_of(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``path`` answers (for the ``Allow`` header of a 405)."""
    return [method for method in HTTP_METHODS if any(
        route.matches({"type": "http", "path": path, "method": method, "root_path": ""})[0] is Match.FULL
        for route in app.router.routes)]


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Import the stage backend, then move every object alive at start-up out of the collector's reach.

    Launching a round needs the backend (``wsis_core.rounds`` imports torch: seconds, inside the first
    launch request otherwise). With torch loaded the process holds ~280,000 long-lived objects, and each
    full (generation 2) collection, which comes every few tens of seconds under load, walked them all:
    200-400 ms in which no request progressed (bench/api_load.py: max latency). ``gc.freeze`` leaves
    them out of collections; ``gc.unfreeze`` on shutdown gives them back (tests build many apps).
    """
    backend.load()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment); also points Celery at its broker."""
    settings = settings or get_settings()
    prepare_folders(settings)
    configure(celery_app, settings)
    app = FastAPI(
        title="wsis control plane",
        description="Datasets, runs, rounds, jobs, artifacts and metrics of weakly supervised instance segmentation.",
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,  # served by services.api.routes.docs from this server's files, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sessionmaker = sessionmaker_for(settings.database_url)
    app.state.read_cache = ReadCache(settings.read_cache_ms / 1000)
    app.add_middleware(InvalidateOnWrite, cache=app.state.read_cache)
    app.add_middleware(RequestGuard, settings=settings)  # outermost: before the cache and every route
    for module in (health, datasets, runs, rounds, review):
        app.include_router(module.router, prefix="/api")
    app.include_router(docs.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(docs.ASSETS_URL, StaticFiles(directory=docs.ASSETS_DIR), name="docs-assets")

    @app.get("/", include_in_schema=False)
    def status_page() -> FileResponse:
        """The status page (``static/index.html``); it polls the JSON API (not part of OpenAPI)."""
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # Starlette names the methods of the first route of the path only
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_methods_of(app, request.url.path))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _readable(exc)

    return app
