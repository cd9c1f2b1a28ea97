"""Control plane: datasets, runs, rounds, jobs, artifacts, metrics.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUS_CHECK = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"
# (table, parent table, foreign-key column) of every child table, in creation order.
CHILDREN = (("runs", "datasets", "dataset_id"), ("rounds", "runs", "run_id"), ("jobs", "rounds", "round_id"),
            ("artifacts", "rounds", "round_id"), ("metrics", "rounds", "round_id"))


def _timestamp(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _parent(table: str, parent: str, column: str) -> list:
    """Primary key, the foreign key to ``parent`` (cascading deletes) and its column."""
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(column, sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.ForeignKeyConstraint([column], [f"{parent}.id"], name=f"fk_{table}_{column}_{parent}", ondelete="CASCADE"),
    ]


def _columns(table: str) -> list:
    return {
        "runs": [sa.Column("config", sa.JSON(), nullable=False), _timestamp("created_at", nullable=False)],
        "rounds": [
            sa.Column("number", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            _timestamp("created_at", nullable=False),
            _timestamp("started_at"),
            _timestamp("finished_at"),
            sa.CheckConstraint(STATUS_CHECK, name="ck_rounds_status"),
            sa.UniqueConstraint("run_id", "number", name="uq_rounds_run_id_number"),
        ],
        "jobs": [
            sa.Column("stage", sa.String(64), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("queue", sa.String(16), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("progress", sa.Float(), nullable=False),
            sa.Column("message", sa.Text(), nullable=True),
            sa.Column("celery_task_id", sa.String(64), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            _timestamp("created_at", nullable=False),
            _timestamp("started_at"),
            _timestamp("finished_at"),
            sa.Column("error", sa.Text(), nullable=True),
            sa.CheckConstraint(STATUS_CHECK, name="ck_jobs_status"),
            sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_jobs_progress"),
            sa.UniqueConstraint("round_id", "stage", name="uq_jobs_round_id_stage"),
        ],
        "artifacts": [
            sa.Column("stage", sa.String(64), nullable=False),
            sa.Column("kind", sa.String(64), nullable=False),
            sa.Column("path", sa.String(1000), nullable=False),
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            _timestamp("created_at", nullable=False),
            sa.UniqueConstraint("round_id", "stage", "kind", name="uq_artifacts_round_id_stage_kind"),
        ],
        "metrics": [
            sa.Column("split", sa.String(100), nullable=False),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("value", sa.Float(), nullable=True),
            sa.UniqueConstraint("round_id", "split", "name", name="uq_metrics_round_id_split_name"),
        ],
    }[table]


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("train_split", sa.String(100), nullable=False),
        sa.Column("val_split", sa.String(100), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("num_train_images", sa.Integer(), nullable=False),
        sa.Column("num_val_images", sa.Integer(), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    for table, parent, column in CHILDREN:
        op.create_table(table, *_parent(table, parent, column), *_columns(table))
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, _parent_table, column in reversed(CHILDREN):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
        op.drop_table(table)
    op.drop_table("datasets")
