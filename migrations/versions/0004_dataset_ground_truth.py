"""Tags-only datasets: ``datasets.ground_truth`` (per-split report) and an optional ``datasets.val_split``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("ground_truth", sa.JSON(), nullable=True))
        batch.alter_column("val_split", existing_type=sa.String(100), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE datasets SET val_split = 'val' WHERE val_split IS NULL")
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("val_split", existing_type=sa.String(100), nullable=False)
        batch.drop_column("ground_truth")
