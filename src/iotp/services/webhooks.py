"""Webhooks: subscriptions, the signed JSON body, the delivery log (also the outbox a
worker sends from), retries with exponential backoff, and auto-disable.

Signature (docs/automations.md): ``X-IoTP-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, f"{t}.{raw body}")``. Receivers recompute it, compare in
constant time, refuse a ``t`` older than a few minutes (replay) and may drop repeated
``X-IoTP-Delivery`` ids (retries reuse the id)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.automation_models import WebhookDelivery, WebhookRow
from iotp.errors import InvalidRequestError, NotFoundError
from iotp.protocol.events import WEBHOOK_EVENT_TYPES

SIGNATURE_HEADER = "X-IoTP-Signature"
MAX_BACKOFF_SECONDS = 3600.0
LEASE_SECONDS = 60.0
MAX_WEBHOOKS = 1000


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# ---- signing ----------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver does (reference implementation, also used by the tests)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), parts.get("v1", ""))


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# ---- targets ----------------------------------------------------------------------------


def is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("webhook url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidRequestError("webhook url must not contain credentials")
    if len(url) > 2000:
        raise InvalidRequestError("webhook url is longer than 2000 characters")
    host = parts.hostname
    if not allow_private:
        literal = True
        try:
            private = is_private(host)
        except ValueError:
            literal, private = False, host in ("localhost",) or host.endswith(".localhost")
        if private:
            raise InvalidRequestError(
                f"webhook target {host!r} is a private, loopback or link-local "
                + ("address" if literal else "name")
                + " (allowed only with IOTP_WEBHOOK_ALLOW_PRIVATE=true)"
            )
    return url


def _check_events(events: Sequence[str]) -> list[str]:
    unknown = sorted(set(events) - set(WEBHOOK_EVENT_TYPES))
    if unknown:
        raise InvalidRequestError(
            f"unknown event types {unknown}: one of {list(WEBHOOK_EVENT_TYPES)}"
        )
    return sorted(set(events))


# ---- storage ----------------------------------------------------------------------------


def to_dict(row: WebhookRow) -> dict[str, Any]:
    """Public view: never the secret."""
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "events": row.events or [],
        "devices": row.devices or [],
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "consecutive_failures": row.consecutive_failures,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_success_at": row.last_success_at,
        "last_failure_at": row.last_failure_at,
    }


async def create(
    session: AsyncSession,
    *,
    name: str,
    url: str,
    events: Sequence[str],
    devices: Sequence[str],
    allow_private: bool,
    now: float | None = None,
) -> tuple[WebhookRow, str]:
    """(webhook, its secret): the only time the secret is given out."""
    count = await session.scalar(select(func.count()).select_from(WebhookRow)) or 0
    if count >= MAX_WEBHOOKS:
        raise InvalidRequestError(f"at most {MAX_WEBHOOKS} webhooks")
    now = time.time() if now is None else now
    secret = new_secret()
    row = WebhookRow(
        name=name,
        url=check_url(url, allow_private=allow_private),
        events=_check_events(events),
        devices=sorted(set(devices)),
        secret=secret,
        enabled=True,
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row, secret


async def get(session: AsyncSession, webhook_id: int) -> WebhookRow:
    row = await session.get(WebhookRow, webhook_id)
    if row is None:
        raise NotFoundError("webhook", str(webhook_id))
    return row


async def update_webhook(
    session: AsyncSession,
    *,
    webhook_id: int,
    allow_private: bool,
    name: str | None = None,
    url: str | None = None,
    events: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> WebhookRow:
    row = await get(session, webhook_id)
    if name is not None:
        row.name = name
    if url is not None:
        row.url = check_url(url, allow_private=allow_private)
    if events is not None:
        row.events = _check_events(events)
    if devices is not None:
        row.devices = sorted(set(devices))
    if enabled is not None:
        row.enabled = enabled
        if enabled:  # re-enabled by a person: start counting afresh
            row.disabled_reason = None
            row.consecutive_failures = 0
    row.updated_at = max(time.time(), row.updated_at + 1e-6)
    await session.flush()
    return row


async def rotate_secret(session: AsyncSession, *, webhook_id: int) -> tuple[WebhookRow, str]:
    row = await get(session, webhook_id)
    row.secret = new_secret()
    row.updated_at = max(time.time(), row.updated_at + 1e-6)
    await session.flush()
    return row, row.secret


async def delete(session: AsyncSession, *, webhook_id: int) -> None:
    row = await get(session, webhook_id)
    await session.execute(
        sa_delete(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .execution_options(synchronize_session=False)
    )
    await session.delete(row)
    await session.flush()


async def list_webhooks(session: AsyncSession) -> list[WebhookRow]:
    return list((await session.scalars(select(WebhookRow).order_by(WebhookRow.id))).all())


async def version(session: AsyncSession) -> tuple[int, float]:
    row = (await session.execute(select(func.count(), func.max(WebhookRow.updated_at)))).one()
    return int(row[0] or 0), float(row[1] or 0.0)


# ---- subscriptions and the outbox ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    webhook_id: int
    events: frozenset[str]
    devices: frozenset[str]

    def wants(self, event_type: str, device_id: str | None) -> bool:
        if event_type not in self.events:
            return False
        return not self.devices or device_id is None or device_id in self.devices


async def subscriptions(session: AsyncSession) -> list[Subscription]:
    rows = await session.execute(
        select(WebhookRow.id, WebhookRow.events, WebhookRow.devices).where(
            WebhookRow.enabled.is_(True)
        )
    )
    return [Subscription(i, frozenset(e or []), frozenset(d or [])) for i, e, d in rows.all()]


def event_body(
    event_type: str, device_id: str | None, payload: dict[str, Any], ts: float
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "device_id": device_id,
        "ts": ts,
        "payload": payload,
    }


def add_deliveries(
    session: AsyncSession, webhook_ids: Iterable[int], body: dict[str, Any], now: float
) -> list[WebhookDelivery]:
    rows = [
        WebhookDelivery(
            webhook_id=webhook_id,
            event_id=body["id"],
            event_type=body["type"],
            device_id=body.get("device_id"),
            body=body,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for webhook_id in webhook_ids
    ]
    session.add_all(rows)
    return rows


async def enqueue(
    session: AsyncSession,
    *,
    event_type: str,
    device_id: str | None,
    payload: dict[str, Any],
    ts: float,
    now: float | None = None,
) -> int:
    """Queue an event for every enabled webhook subscribed to it (from the API side;
    the worker keeps the subscriptions in memory and calls add_deliveries)."""
    subs = [s for s in await subscriptions(session) if s.wants(event_type, device_id)]
    if subs:
        body = event_body(event_type, device_id, payload, ts)
        add_deliveries(
            session, [s.webhook_id for s in subs], body, time.time() if now is None else now
        )
        await session.flush()
    return len(subs)


async def claim_due(session: AsyncSession, *, now: float, limit: int) -> list[WebhookDelivery]:
    """Pending deliveries whose time has come, leased to this process (a conditional
    update, so two workers never send the same attempt)."""
    rows = (
        await session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    ).all()
    claimed: list[WebhookDelivery] = []
    for row in rows:
        result = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == row.id,
                WebhookDelivery.next_attempt_at == row.next_attempt_at,
                WebhookDelivery.status == DeliveryStatus.PENDING,
            )
            .values(next_attempt_at=now + LEASE_SECONDS)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            claimed.append(row)
    return claimed


async def next_due(session: AsyncSession) -> float | None:
    value = await session.scalar(
        select(func.min(WebhookDelivery.next_attempt_at)).where(
            WebhookDelivery.status == DeliveryStatus.PENDING
        )
    )
    return None if value is None else float(value)


def backoff(attempts: int, base: float) -> float:
    """Wait after the ``attempts``-th failed attempt: base, 2 base, 4 base, ... <= 1 h."""
    return float(min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


async def record(
    session: AsyncSession,
    *,
    delivery_id: int,
    outcome: Outcome,
    now: float,
    max_attempts: int,
    backoff_base: float,
    disable_after: int,
) -> tuple[WebhookDelivery | None, WebhookRow | None, bool]:
    """Store an attempt's outcome. Returns (delivery, webhook, webhook just disabled)."""
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        return None, None, False
    hook = await session.get(WebhookRow, delivery.webhook_id)
    delivery.attempts += 1
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error[:1000] if outcome.error else None
    delivery.last_duration_ms = round(outcome.duration_ms, 2)
    disabled_now = False
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.finished_at = now
        if hook is not None:
            hook.consecutive_failures = 0
            hook.last_success_at = now
    else:
        if hook is not None and hook.enabled:  # a disabled webhook's failures don't count
            hook.consecutive_failures += 1
            hook.last_failure_at = now
            if hook.consecutive_failures >= disable_after:
                hook.enabled = False
                hook.disabled_reason = (
                    f"disabled after {hook.consecutive_failures} failed attempts in a row "
                    f"(last: {outcome.error or outcome.status_code})"
                )
                hook.updated_at = max(now, hook.updated_at + 1e-6)
                disabled_now = True
        # Decided after the disable above, so the attempt that disables it ends too.
        if delivery.attempts >= max_attempts or hook is None or not hook.enabled:
            delivery.status = DeliveryStatus.FAILED
            delivery.finished_at = now
        else:
            delivery.next_attempt_at = now + backoff(delivery.attempts, backoff_base)
    if hook is not None and not hook.enabled:
        # Nothing more goes to a disabled webhook: its queue ends as failed.
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.webhook_id == hook.id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.id != delivery.id,
            )
            .values(status=DeliveryStatus.FAILED, finished_at=now, last_error="webhook disabled")
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    return delivery, hook, disabled_now


async def list_deliveries(
    session: AsyncSession,
    *,
    webhook_id: int,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[WebhookDelivery], int]:
    conditions: list[Any] = [WebhookDelivery.webhook_id == webhook_id]
    if status:
        conditions.append(WebhookDelivery.status == status)
    rows = await session.scalars(
        select(WebhookDelivery)
        .where(*conditions)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(
        select(func.count()).select_from(WebhookDelivery).where(*conditions)
    )
    return list(rows.all()), int(total or 0)


def delivery_dict(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "device_id": row.device_id,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "last_duration_ms": row.last_duration_ms,
        "body": row.body,
    }
