"""The FastAPI application: ``uvicorn --factory services.api.app:create_app`` (OpenAPI at ``/docs``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from services.api.db import sessionmaker_for
from services.api.routes import datasets, health, rounds, runs
from services.api.settings import Settings, get_settings, prepare_folders
from services.workers.celery_app import app as celery_app
from services.workers.celery_app import configure

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _readable(exc: RequestValidationError) -> JSONResponse:
    """422 with one readable line (``body.config.profile: unknown profile ...``) plus the structured list."""
    errors = [
        {"loc": [str(part) for part in error["loc"]], "msg": error["msg"]}
        for error in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(error['loc'])}: {error['msg']}" for error in errors)
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment); also points Celery at its broker."""
    settings = settings or get_settings()
    prepare_folders(settings)
    configure(celery_app, settings)
    app = FastAPI(
        title="wsis control plane",
        description="Datasets, runs, rounds, jobs, artifacts and metrics of weakly supervised instance segmentation.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.sessionmaker = sessionmaker_for(settings.database_url)
    for module in (health, datasets, runs, rounds):
        app.include_router(module.router, prefix="/api")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def status_page() -> FileResponse:
        """The status page (``static/index.html``); it polls the JSON API (not part of OpenAPI)."""
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _readable(exc)

    return app
