"""Database engines and sessions for the API and the workers, and ``alembic upgrade`` from code."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from services.common.settings import ensure_sqlite_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
SQLITE_BUSY_TIMEOUT_S = 30
# Server databases: connections kept open per process, and how many more a burst may open. SQLAlchemy's default
# (5) made every request beyond the 5th concurrent one open and close a PostgreSQL connection of its own
# (bench/api_load.py: 50 clients).
POOL_SIZE, MAX_OVERFLOW = 20, 10


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout (API and worker share the file)."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    ensure_sqlite_folder(url)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine


@lru_cache
def sessionmaker_for(url: str) -> sessionmaker[Session]:
    """One session factory (and connection pool) per database URL and process."""
    return sessionmaker(make_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with sessionmaker_for(url)() as session, session.begin():
        yield session


def alembic_config(url: str):
    """Alembic configuration of this repository's ``migrations/`` bound to ``url``."""
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False  # keep the caller's logging setup
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on ``url``."""
    from alembic import command

    ensure_sqlite_folder(url)
    command.upgrade(alembic_config(url), revision)
