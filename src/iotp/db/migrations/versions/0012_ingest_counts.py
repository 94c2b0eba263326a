"""ingest counts committed with the rows they count

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 13:45:00

A worker adds each batch's new and duplicate rows to its ``ingest_counts`` row in the
batch's own transaction, so the stored-messages figure equals the telemetry rows even
after the worker is killed. The counts published so far in component_stats are carried
over as the starting values.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counts = op.create_table(
        "ingest_counts",
        sa.Column("component_id", sa.String(length=128), nullable=False),
        sa.Column("stored", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("component_id"),
    )
    stats = sa.table(
        "component_stats",
        sa.column("component_id", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("data", sa.JSON()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(stats.c.component_id, stats.c.data).where(stats.c.kind == "worker")
    ).all()
    values = [
        {
            "component_id": component_id,
            "stored": int((data or {}).get("stored", 0)),
            "duplicates": int((data or {}).get("duplicates", 0)),
        }
        for component_id, data in rows
    ]
    if values:
        op.bulk_insert(counts, values)


def downgrade() -> None:
    op.drop_table("ingest_counts")
