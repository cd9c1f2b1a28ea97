"""Alembic on SQLite and PostgreSQL: ``upgrade head`` builds exactly the models' schema, ``downgrade base``
removes it."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from integration import harness
from services.common.db import alembic_config, make_engine
from services.common.models import Base

TABLES = {"datasets", "runs", "rounds", "jobs", "artifacts", "metrics"}


def check_round_trip(url: str) -> None:
    """upgrade head -> schema equals the models -> downgrade base -> empty -> upgrade head again."""
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        command.upgrade(config, "head")
        with engine.connect() as connection:
            assert TABLES <= set(inspect(connection).get_table_names())
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        command.downgrade(config, "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {"alembic_version"}
        command.upgrade(config, "head")
        with engine.connect() as connection:
            assert TABLES <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_on_sqlite(tmp_path):
    check_round_trip(f"sqlite:///{tmp_path}/wsis.sqlite")


def test_upgrade_and_downgrade_on_postgres():
    with harness.throwaway_postgres_database() as url:
        check_round_trip(url)


def test_offline_sql_creates_every_table(capsys):
    command.upgrade(alembic_config("postgresql://nobody@localhost/none"), "head", sql=True)
    sql = capsys.readouterr().out
    assert all(f"CREATE TABLE {table}" in sql for table in TABLES)
