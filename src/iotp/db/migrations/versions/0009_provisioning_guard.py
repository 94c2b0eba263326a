"""provisioning guard: the fingerprint of a device's secret, refused other secrets

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:00:00

``fingerprint`` is what the device shows too (log line, setup portal), so an admin can
check a pending request belongs to the device in front of them; ``conflicts`` counts
requests refused because another secret was already pending or approved for the id.
Existing rows: no fingerprint (the secret is only kept hashed), no conflicts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("conflicts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.drop_column("conflicts")
        batch_op.drop_column("fingerprint")
