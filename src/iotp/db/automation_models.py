"""Automation tables: rules, alerts, webhooks and their delivery log (one ``Base`` with
iotp.db.models)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from iotp.db.models import Base, JsonType


class RuleRow(Base):
    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    # The rule body (iotp.automation.spec.RuleBody) minus name/description/enabled.
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, index=True)
    last_fired_at: Mapped[float | None] = mapped_column(Float)
    fire_count: Mapped[int] = mapped_column(Integer, default=0)


class AlertRow(Base):
    """One alert from raise to clear; ``key`` is shared by the raisings that mean the same
    thing (rule + device), so an open alert is never duplicated."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_key_status", "key", "status"),
        Index("ix_alerts_status_raised", "status", "raised_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    rule_id: Mapped[int | None] = mapped_column(Integer, index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    raised_at: Mapped[float] = mapped_column(Float, index=True)
    acknowledged_at: Mapped[float | None] = mapped_column(Float)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    cleared_at: Mapped[float | None] = mapped_column(Float)
    cleared_by: Mapped[str | None] = mapped_column(String(128))
    history: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)


class WebhookRow(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JsonType, default=list)
    # For telemetry (and to narrow other events): device ids; empty = every device.
    devices: Mapped[list[str]] = mapped_column(JsonType, default=list)
    # The HMAC key: needed in clear to sign, shown once at creation, never returned again.
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    last_success_at: Mapped[float | None] = mapped_column(Float)
    last_failure_at: Mapped[float | None] = mapped_column(Float)


class WebhookDelivery(Base):
    """The delivery log and the outbox: pending rows are sent by a worker, retried with
    exponential backoff until delivered or out of attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_hook_created", "webhook_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(Integer, ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # pending | delivered | failed
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[float | None] = mapped_column(Float)
