"""device acks: whether a device acknowledges commands

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:30:00

A device built to the original design never acknowledges a command; its commands stay
``sent`` (noted "device does not acknowledge") instead of ending ``timed_out``. A device
acks once it has sent ``info`` (the protocol's devices ack) or any ack. Existing rows:
devices with a firmware version on record or an acknowledged command.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("acks", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE devices SET acks = true WHERE firmware_version IS NOT NULL OR id IN "
        "(SELECT device_id FROM commands WHERE status IN ('acked', 'failed'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("acks")
