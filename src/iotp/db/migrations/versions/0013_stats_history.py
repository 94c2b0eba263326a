"""stats history for the overview's charts

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 14:15:00

The maintenance leader records the fleet's figures (devices, devices online, messages
stored) every round; the overview charts messages/s and devices online over the last
hour and day from them. Rows older than ``stats_history_days`` are deleted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stats_history",
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("devices_total", sa.Integer(), nullable=False),
        sa.Column("devices_online", sa.Integer(), nullable=False),
        sa.Column("messages_stored", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ts"),
    )


def downgrade() -> None:
    op.drop_table("stats_history")
