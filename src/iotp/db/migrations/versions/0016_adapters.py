"""adapters: mappings added through the API; foreign accounts' topic rules

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 17:40:00

``adapter_mappings`` holds mappings added at run time (the shipped ones live in the
package). A device credential may belong to a foreign client (Tasmota, a Zigbee2MQTT
bridge, Shelly): ``adapter`` names its mapping and ``acl`` lists the topics it may
write and read, which the brokers' ACLs are generated from.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "adapter_mappings",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_adapter_mappings_updated_at", "adapter_mappings", ["updated_at"])
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("adapter", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("acl", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.drop_column("acl")
        batch_op.drop_column("adapter")
    op.drop_index("ix_adapter_mappings_updated_at", table_name="adapter_mappings")
    op.drop_table("adapter_mappings")
