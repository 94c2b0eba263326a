"""device control: a command's publisher claim (``sending`` state)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 12:00:00

A command is claimed (queued -> sending, with ``claimed_at``/``claimed_by``) and that
claim committed before it is published; it becomes ``sent`` on the broker's PUBACK
(iotp.services.commands). Existing rows need no change: ``sending`` is a new status.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=96), nullable=True))


def downgrade() -> None:
    # A command caught mid-publish goes back to the queue the old code understands.
    op.execute("UPDATE commands SET status = 'queued' WHERE status = 'sending'")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("claimed_at")
