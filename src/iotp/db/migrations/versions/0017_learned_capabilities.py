"""learned capabilities: what a device that never described itself has shown it has

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 17:10:00

The metrics in its data, the relays and servo in its reported state, recorded while its
capabilities are unknown (no ``info``); ``capabilities`` stays what its info said. NULL
and [] both mean nothing learned.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "learned_capabilities",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("learned_capabilities")
