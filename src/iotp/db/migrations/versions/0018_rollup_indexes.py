"""rollups: read by bucket, and a device's history read from the index alone

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 09:30:00

Every maintenance round reads the latest minutes to roll them up per hour and deletes
rollups older than their retention, both by ``bucket`` alone; the primary key starts with
the device, so without an index on ``bucket`` both read the whole table every round
(seconds per round with a year of hourly rollups for 1,000 devices).

Rollups are written a bucket at a time for the whole fleet, so one device's year of hours
lies on thousands of table pages; a chart reads every one of them. On PostgreSQL the
primary key also carries the values (INCLUDE), so a chart reads a device's rollups from
the index pages alone, where they lie together (bench/RESULTS.md "A year of history").

Rebuilding these indexes on existing tables blocks the rollups' writes (only the
maintenance writes them) while it runs.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("telemetry_rollup_1m", "telemetry_rollup_1h")


def _primary_key(table: str, include: str) -> None:
    op.execute(
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, ADD CONSTRAINT {table}_pkey "
        f"PRIMARY KEY (device_id, metric, bucket){include}"
    )


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_bucket", table, ["bucket"])
        if op.get_bind().dialect.name == "postgresql":
            _primary_key(table, " INCLUDE (vmin, vmax, vsum, vcount)")


def downgrade() -> None:
    for table in TABLES:
        if op.get_bind().dialect.name == "postgresql":
            _primary_key(table, "")
        op.drop_index(f"ix_{table}_bucket", table_name=table)
