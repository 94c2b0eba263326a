"""firmware: signing key of each bundle; rollouts: signing key and explicit allowances

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:00:00

``firmware.key_id`` / ``next_key_id``: the Ed25519 key that signed a bundle and the key a
rotation moves devices to (NULL: unsigned, no rotation). ``rollouts.key_id``,
``allow_unsigned`` and ``allow_downgrade`` record what a rollout was started with.
Bundles stored before this revision are unsigned.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("firmware", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("next_key_id", sa.String(length=16), nullable=True))
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("allow_unsigned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("allow_downgrade", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("allow_downgrade")
        batch_op.drop_column("allow_unsigned")
        batch_op.drop_column("key_id")
    with op.batch_alter_table("firmware", schema=None) as batch_op:
        batch_op.drop_column("next_key_id")
        batch_op.drop_column("key_id")
