"""telemetry at scale: rollups, storage state; on PostgreSQL, telemetry partitioned by day

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 18:40:00

On PostgreSQL ``telemetry`` becomes a table partitioned by range of ``ts`` (one
partition per UTC day, ``telemetry_partitions.pYYYYMMDD``, plus
``telemetry_partitions.pdefault`` that catches anything outside the created ranges, so
no insert ever fails). The partitions live in their own schema, out of the models' way. The worker creates partitions ahead and drops old ones
(iotp.services.retention). Existing rows are copied over. SQLite keeps a plain table.
The rollup tables exist on both, so the schema is the same everywhere.
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAY = 86400
# Older existing rows land in the default partition instead of hundreds of tiny ones.
BACKFILL_DAYS = 62
AHEAD_DAYS = 3

COLUMNS = (
    "device_id varchar(64) NOT NULL, ts double precision NOT NULL, seq bigint NOT NULL, "
    "metrics jsonb NOT NULL, attributes jsonb"
)


SCHEMA = "telemetry_partitions"


def _partition_name(day: int) -> str:
    return f"{SCHEMA}.p" + time.strftime("%Y%m%d", time.gmtime(day))


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.Float(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=False),
        sa.Column("vmax", sa.Float(), nullable=False),
        sa.Column("vsum", sa.Float(), nullable=False),
        sa.Column("vcount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "metric", "bucket"),
    )


def upgrade() -> None:
    _rollup_table("telemetry_rollup_1m")
    _rollup_table("telemetry_rollup_1h")
    op.create_table(
        "storage_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_unpartitioned")
    op.execute(
        "ALTER TABLE telemetry_unpartitioned RENAME CONSTRAINT telemetry_pkey "
        "TO telemetry_unpartitioned_pkey"
    )
    op.execute(
        f"CREATE TABLE telemetry ({COLUMNS}, CONSTRAINT telemetry_pkey "
        "PRIMARY KEY (device_id, ts, seq)) PARTITION BY RANGE (ts)"
    )
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(f"CREATE TABLE {SCHEMA}.pdefault PARTITION OF telemetry DEFAULT")
    now = time.time()
    newest = bind.execute(sa.text("SELECT max(ts) FROM telemetry_unpartitioned")).scalar()
    oldest = bind.execute(sa.text("SELECT min(ts) FROM telemetry_unpartitioned")).scalar()
    first = int(max(oldest or now, now - BACKFILL_DAYS * DAY) // DAY) * DAY
    last = int(max(newest or now, now) // DAY) * DAY + AHEAD_DAYS * DAY
    for day in range(first, last + DAY, DAY):
        op.execute(
            f"CREATE TABLE {_partition_name(day)} PARTITION OF telemetry "
            f"FOR VALUES FROM ({day}) TO ({day + DAY})"
        )
    op.execute("INSERT INTO telemetry SELECT * FROM telemetry_unpartitioned")
    op.execute("DROP TABLE telemetry_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            f"CREATE TABLE telemetry_plain ({COLUMNS}, "
            "CONSTRAINT telemetry_plain_pkey PRIMARY KEY (device_id, ts, seq))"
        )
        op.execute("INSERT INTO telemetry_plain SELECT * FROM telemetry")
        op.execute("DROP TABLE telemetry CASCADE")  # every partition with it
        op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        op.execute("ALTER TABLE telemetry_plain RENAME TO telemetry")
        op.execute("ALTER TABLE telemetry RENAME CONSTRAINT telemetry_plain_pkey TO telemetry_pkey")
    op.drop_table("storage_state")
    op.drop_table("telemetry_rollup_1h")
    op.drop_table("telemetry_rollup_1m")
