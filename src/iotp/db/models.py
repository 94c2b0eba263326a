"""ORM tables. All times are UTC epoch seconds (float): cheap to write on the ingest
path, identical on SQLite and PostgreSQL, and trivially bucketed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text
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


class Telemetry(Base):
    """One row per data message: numeric metrics and other attributes as JSON.

    The key (device_id, ts, seq) makes QoS 1 redeliveries idempotent."""

    __tablename__ = "telemetry"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metrics: Mapped[dict[str, float]] = mapped_column(JsonType)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


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
