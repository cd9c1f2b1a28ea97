"""The device a job ran on (``jobs.device``) and how many rounds a run launches by itself (``runs.rounds_to_launch``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("device", sa.String(32), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("rounds_to_launch", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("rounds_to_launch")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("device")
