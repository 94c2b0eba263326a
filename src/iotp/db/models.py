"""ORM tables. All times are UTC epoch seconds (float): cheap to write on the ingest
path, identical on SQLite and PostgreSQL, and trivially bucketed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str | None] = mapped_column(String(64), index=True)
    capabilities: Mapped[list[str]] = mapped_column(JsonType, default=list)
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    protocol: Mapped[int] = mapped_column(Integer, default=1)
    ip: Mapped[str | None] = mapped_column(String(64))
    rssi: Mapped[int | None] = mapped_column(Integer)
    report_interval: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="unknown", index=True)
    status_changed_at: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float | None] = mapped_column(Float)
    notes: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonType, default=dict)
    reported_state: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Units the device declared in its info (metric -> unit); None: it declared none.
    units: Mapped[dict[str, str] | None] = mapped_column(JsonType)
    # Acknowledges commands: it sent info (the protocol's devices ack) or an ack.
    acks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Capabilities shown by what a device without info reports (data metrics, state's
    # relays and servo); commands are not checked against them (iotp.services.commands).
    learned_capabilities: Mapped[list[str] | None] = mapped_column(JsonType)


class Telemetry(Base):
    """One row per data message: numeric metrics and other attributes as JSON.

    The key (device_id, ts, seq) makes QoS 1 redeliveries idempotent."""

    __tablename__ = "telemetry"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metrics: Mapped[dict[str, float]] = mapped_column(JsonType)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


# ---- telemetry at scale (iotp.services.retention) ------------------------------------
# On PostgreSQL `telemetry` is partitioned by day (migration 0005); its partitions live in
# the schema `telemetry_partitions`, outside these models.


class _RollupColumns:
    """Per device, metric and bucket start: min/max/sum/count (averages compose)."""

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[float] = mapped_column(Float, primary_key=True)
    vmin: Mapped[float] = mapped_column(Float)
    vmax: Mapped[float] = mapped_column(Float)
    vsum: Mapped[float] = mapped_column(Float)
    vcount: Mapped[int] = mapped_column(BigInteger)


def _rollup_indexes(table: str) -> tuple[Any, ...]:
    """The maintenance reads and expires rollups by bucket alone; charts read a device's
    rollups from the primary key, which carries the values on PostgreSQL (migration 0018)."""
    return (
        PrimaryKeyConstraint(
            "device_id",
            "metric",
            "bucket",
            name=f"{table}_pkey",
            postgresql_include=["vmin", "vmax", "vsum", "vcount"],
        ),
        Index(f"ix_{table}_bucket", "bucket"),
    )


class TelemetryRollupMinute(_RollupColumns, Base):
    __tablename__ = "telemetry_rollup_1m"
    __table_args__ = _rollup_indexes("telemetry_rollup_1m")


class TelemetryRollupHour(_RollupColumns, Base):
    __tablename__ = "telemetry_rollup_1h"
    __table_args__ = _rollup_indexes("telemetry_rollup_1h")


class StorageState(Base):
    """Small platform-wide values by name: rollup watermarks, the last retention run,
    the end of the pairing window (services/pairing.py)."""

    __tablename__ = "storage_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class DeviceEventRow(Base):
    """Presence transitions, registrations and device-side events."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_device_ts", "device_id", "ts"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float] = mapped_column(Float, index=True)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class ComponentStats(Base):
    """Counters each running component (worker, API) publishes for /api/stats."""

    __tablename__ = "component_stats"

    component_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class IngestCount(Base):
    """What a worker stored, counted in the transaction that stores it (so the counts
    equal the rows, whatever happens to the process after the commit)."""

    __tablename__ = "ingest_counts"

    component_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    stored: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)


class StatsSample(Base):
    """The fleet's figures once per maintenance round, for the overview's charts (kept
    ``stats_history_days``)."""

    __tablename__ = "stats_history"

    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    devices_total: Mapped[int] = mapped_column(Integer)
    devices_online: Mapped[int] = mapped_column(Integer)
    messages_stored: Mapped[int] = mapped_column(BigInteger)


# ---- device control: commands, shadow, firmware, rollouts ---------------------------


class CommandRow(Base):
    """One command and its lifecycle (iotp.protocol.events.CommandStatus)."""

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_device_created", "device_id", "created_at"),
        Index("ix_commands_status_deadline", "status", "deadline"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    # Secret parameters (protocol.secrets), encrypted, while the command may still be
    # published; params shows them redacted (migration 0011).
    secret_params: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), default="api")
    timeout: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    # A queued command not sent by then expires (created_at + ttl).
    expires_at: Mapped[float] = mapped_column(Float)
    # The publisher's claim while ``sending`` (committed before the publish); a claim
    # older than CLAIM_TIMEOUT goes back to queued (iotp.services.commands).
    claimed_at: Mapped[float | None] = mapped_column(Float)
    claimed_by: Mapped[str | None] = mapped_column(String(96))
    sent_at: Mapped[float | None] = mapped_column(Float)
    # A sent command not finally acked by then times out (sent_at + timeout).
    deadline: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    result: Mapped[Any] = mapped_column(JsonType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    rollout_id: Mapped[int | None] = mapped_column(Integer, index=True)


class DeviceShadow(Base):
    """Desired state per device; the reported half is devices.reported_state."""

    __tablename__ = "device_shadows"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    desired: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[float] = mapped_column(Float)
    # Reconciliation rounds for the current version; capped so a device that cannot
    # reach the desired state is not sent commands forever.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class FirmwareRow(Base):
    __tablename__ = "firmware"
    __table_args__ = (UniqueConstraint("version", "device_type", name="uq_firmware_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    # "" = any device type
    device_type: Mapped[str] = mapped_column(String(64), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # id of the Ed25519 key that signed the bundle (None: unsigned), and of the key a
    # rotation moves devices to
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    next_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class RolloutRow(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key: a finished rollout keeps its record after its firmware is deleted.
    firmware_id: Mapped[int] = mapped_column(Integer, index=True)
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    download_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    selector: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    rate_per_minute: Mapped[float] = mapped_column(Float)
    failure_threshold: Mapped[float] = mapped_column(Float)
    timeout: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    # Pacing: the earliest time the next device may be started.
    next_start_at: Mapped[float] = mapped_column(Float)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    # Failures counted before the last resume; the threshold applies to new ones.
    failure_baseline: Mapped[int] = mapped_column(Integer, default=0)
    # the firmware's signing key (None: unsigned, started with allow_unsigned)
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    allow_unsigned: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_downgrade: Mapped[bool] = mapped_column(Boolean, default=False)


class RolloutDevice(Base):
    __tablename__ = "rollout_devices"
    __table_args__ = (Index("ix_rollout_devices_status", "rollout_id", "status"),)

    rollout_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    command_id: Mapped[str | None] = mapped_column(String(36))
    stage: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    from_version: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Float)
