"""Service settings from the environment (prefix ``WSIS_``), shared by the API, the workers and Alembic.

The defaults need no server: SQLite files under ``./var/`` for the database, the Celery broker
(kombu's SQLAlchemy transport) and the result backend. ``postgresql://`` and ``redis://`` URLs run
the same code on real services.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the control plane; see docs/service.md for the table."""

    model_config = SettingsConfigDict(env_prefix="WSIS_", extra="ignore")

    database_url: str = "sqlite:///var/wsis.sqlite"
    broker_url: str = "sqla+sqlite:///var/broker.sqlite"
    result_backend: str = "db+sqlite:///var/results.sqlite"
    data_root: Path = Path("var")
    artifact_root: Path = Path("var/artifacts")
    # The artifact store (services/common/artifact_store.py): unset = the folder WSIS_ARTIFACT_ROOT (shared by every
    # worker); ``s3://bucket/prefix`` = S3-compatible object storage at WSIS_S3_ENDPOINT_URL (credentials: AWS_*).
    artifact_url: str | None = None
    s3_endpoint_url: str | None = None
    # Datasets at s3:// paths must lie under this ``s3://bucket/prefix`` (the WSIS_DATA_ROOT of object storage).
    data_url: str | None = None
    # This host's copy of the store's and datasets' objects (size-bounded, least recently used runs go first).
    scratch: Path = Path("var/scratch")
    scratch_max_mb: int = Field(20480, ge=1)
    # ``all``: keep every checkpoint; ``needed``: once a round succeeded, drop its checkpoints that no later round,
    # resume or download reads (docs/scaling.md, Artifact lifecycle).
    keep_models: Literal["all", "needed"] = "all"
    # Backbone weight files a run may name (profile field backbone_weights, relative to this folder).
    weights_root: Path = Path("var/weights")
    api_token: str | None = None
    # Browser origins (``scheme://host[:port]``) besides the API's own host allowed to write, e.g. behind a proxy.
    trusted_origins: list[str] = []
    # Largest JSON request body; larger ones are answered 413 before they are read (services/api/guards.py).
    max_json_kb: int = Field(1024, ge=1)
    # Largest dataset upload (``POST /api/datasets/upload`` enforces it while streaming).
    max_upload_mb: int = Field(2048, ge=1)
    # Module with the round contract (STAGES, GPU_STAGES, run_stage, round_metrics); tests name a fake.
    stage_backend: str = "wsis_core.rounds"
    # A worker touches this file once it consumes tasks (``make run`` waits for it before printing the URL).
    worker_ready_file: Path | None = None
    # A worker renews the lease of its running job every quarter of this; a running job whose lease lapsed
    # (its worker was killed or lost) is queued again by a live worker (see docs/service.md, Reliability).
    job_lease_s: float = Field(60.0, gt=0)
    # A job whose worker was lost this many times (killed, out of memory) fails instead of being queued again.
    max_attempts: int = Field(3, ge=1)
    # Polled reads (run, round, metrics, artifacts, pseudo labels) are shared for this long by the requests
    # for the same resource (services/api/read_cache.py); the API's own writes clear them. 0: off.
    read_cache_ms: float = Field(250.0, ge=0)

    def masked(self, text: str) -> str:
        """``text`` with the server's root folders written as ``$WSIS_DATA_ROOT`` etc. (for public messages)."""
        for name in ("data_root", "artifact_root", "weights_root", "scratch"):
            text = text.replace(str(getattr(self, name)), f"$WSIS_{name.upper()}")
        return text

    @property
    def object_store(self) -> bool:
        """Artifacts live in object storage (else in the folder WSIS_ARTIFACT_ROOT)."""
        return bool(self.artifact_url and self.artifact_url.startswith("s3://"))

    @field_validator("data_root", "artifact_root", "weights_root", "scratch")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @field_validator("api_token", "worker_ready_file", "artifact_url", "s3_endpoint_url", "data_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: str | Path | None) -> str | Path | None:
        return value or None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()


def prepare_folders(settings: Settings) -> None:
    """Create the artifact root (or the scratch folder) and the folders of file-based SQLite URLs (called by the API
    and each worker)."""
    (settings.scratch if settings.object_store else settings.artifact_root).mkdir(parents=True, exist_ok=True)
    for url in (settings.database_url, settings.broker_url, settings.result_backend):
        ensure_sqlite_folder(url)


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a file-based SQLite URL (``sqlite:///``, ``sqla+sqlite:///``, ``db+sqlite:///``)."""
    scheme, sep, rest = url.partition(":///")
    if sep and "sqlite" in scheme.split("+") and rest and rest != ":memory:":
        Path(rest.split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
