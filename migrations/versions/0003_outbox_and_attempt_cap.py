"""Dispatch outbox of rounds and the count of lost attempts of jobs.

``rounds.undispatched_since``: set while a round's queued jobs wait to be sent to the broker (the recovery
loop sends those left behind by a crash). ``jobs.lost_attempts``: attempts lost with their worker since the
job was last launched (capped by WSIS_MAX_ATTEMPTS).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("undispatched_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lost_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lost_attempts")
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("undispatched_since")
