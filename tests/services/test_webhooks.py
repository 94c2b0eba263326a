"""Webhooks on a real database: a target or an event list that cannot be is refused with
the reason (HTTP 422), events are queued only for the webhooks that want them, a due
delivery is leased to one sender, failures back off and end, and a webhook that keeps
failing is disabled with its queue."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db.automation_models import WebhookDelivery
from iotp.errors import InvalidRequestError
from iotp.services import webhooks
from iotp.services.webhooks import DeliveryStatus, Outcome

NOW = 1_800_000_000.0
PUBLIC = "https://hooks.example.com/iotp"
FAILED = Outcome(ok=False, status_code=503, error=None, duration_ms=12.0)
OK = Outcome(ok=True, status_code=200, error=None, duration_ms=8.0)


async def _hook(
    session: AsyncSession,
    *,
    url: str = PUBLIC,
    events: Sequence[str] = ("alert",),
    devices: Sequence[str] = (),
    allow_private: bool = False,
) -> int:
    row, secret = await webhooks.create(
        session,
        name="ops",
        url=url,
        events=events,
        devices=devices,
        allow_private=allow_private,
        now=NOW,
    )
    await session.commit()
    assert secret.startswith("whsec_")
    assert "secret" not in webhooks.to_dict(row)
    return row.id


@pytest.mark.parametrize(
    ("url", "events", "reason"),
    [
        ("ftp://hooks.example.com/x", ["alert"], "must be an http:// or https:// URL with a host"),
        ("https://user:pw@hooks.example.com/x", ["alert"], "must not contain credentials"),
        ("http://127.0.0.1:8080/x", ["alert"], "'127.0.0.1' is a private, loopback or link-local"),
        ("http://[::ffff:10.0.0.1]/x", ["alert"], "is a private, loopback or link-local address"),
        ("http://nas.localhost/x", ["alert"], "is a private, loopback or link-local name"),
        (
            PUBLIC,
            ["alert", "device_data", "gossip"],
            "unknown event types ['device_data', 'gossip']",
        ),
    ],
)
async def test_a_webhook_that_cannot_be_is_refused_with_the_reason(
    session: AsyncSession, url: str, events: list[str], reason: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        await _hook(session, url=url, events=events)
    assert reason in str(refused.value)
    await session.rollback()
    assert await webhooks.list_webhooks(session) == []


async def test_private_targets_only_when_allowed(session: AsyncSession) -> None:
    hook_id = await _hook(session, url="http://10.1.2.3/hook", allow_private=True)
    with pytest.raises(InvalidRequestError, match="IOTP_WEBHOOK_ALLOW_PRIVATE"):
        await webhooks.update_webhook(
            session, webhook_id=hook_id, allow_private=False, url="http://192.168.1.9/"
        )
    await session.rollback()
    assert (await webhooks.get(session, hook_id)).url == "http://10.1.2.3/hook"


async def test_events_are_queued_for_the_webhooks_that_want_them(session: AsyncSession) -> None:
    every_alert = await _hook(session, events=["alert"])
    one_device = await _hook(session, events=["alert", "device_status"], devices=["ESP32-B"])
    off = await _hook(session, events=["alert"])
    await webhooks.update_webhook(session, webhook_id=off, allow_private=False, enabled=False)
    await session.commit()

    async def queued(event_type: str, device_id: str | None) -> set[int]:
        before = {
            d.id for hook in (every_alert, one_device, off) for d in await _all(session, hook)
        }
        count = await webhooks.enqueue(
            session, event_type=event_type, device_id=device_id, payload={}, ts=NOW, now=NOW
        )
        await session.commit()
        new = {
            hook
            for hook in (every_alert, one_device, off)
            for d in await _all(session, hook)
            if d.id not in before
        }
        assert count == len(new)
        return new

    assert await queued("alert", "ESP32-A") == {every_alert}
    assert await queued("alert", "ESP32-B") == {every_alert, one_device}
    assert await queued("alert", None) == {every_alert, one_device}  # not about a device
    assert await queued("device_status", "ESP32-A") == set()
    assert await queued("device_status", "ESP32-B") == {one_device}


async def _all(session: AsyncSession, webhook_id: int) -> list[WebhookDelivery]:
    rows, _ = await webhooks.list_deliveries(session, webhook_id=webhook_id)
    return rows


async def test_a_due_delivery_is_leased_to_one_sender(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await _hook(session)
        await webhooks.enqueue(
            session, event_type="alert", device_id="ESP32-A", payload={}, ts=NOW, now=NOW
        )
        await session.commit()
    async with sessions() as one, sessions() as other:
        assert await webhooks.claim_due(one, now=NOW - 1, limit=10) == []  # not due yet
        claimed = await webhooks.claim_due(one, now=NOW, limit=10)
        await one.commit()
        assert len(claimed) == 1
        assert await webhooks.claim_due(other, now=NOW + 1, limit=10) == []  # leased
        await other.commit()
        # A sender that died holding the lease: the delivery is due again after it.
        again = await webhooks.claim_due(other, now=NOW + webhooks.LEASE_SECONDS, limit=10)
        await other.commit()
        assert [d.id for d in again] == [claimed[0].id]


async def test_failures_back_off_and_end_after_the_last_attempt(session: AsyncSession) -> None:
    hook_id = await _hook(session)
    await webhooks.enqueue(session, event_type="alert", device_id=None, payload={}, ts=NOW, now=NOW)
    await session.commit()
    (delivery,) = await _all(session, hook_id)
    now = NOW
    waits = []
    for _ in range(2):
        row, hook, disabled = await webhooks.record(
            session,
            delivery_id=delivery.id,
            outcome=FAILED,
            now=now,
            max_attempts=3,
            backoff_base=10,
            disable_after=100,
        )
        await session.commit()
        assert row is not None
        assert row.status == DeliveryStatus.PENDING
        assert not disabled
        waits.append(row.next_attempt_at - now)
        now = row.next_attempt_at
    assert waits == [10, 20]
    row, hook, _ = await webhooks.record(
        session,
        delivery_id=delivery.id,
        outcome=FAILED,
        now=now,
        max_attempts=3,
        backoff_base=10,
        disable_after=100,
    )
    await session.commit()
    assert row is not None
    assert hook is not None
    assert (row.status, row.attempts, row.finished_at, row.last_status_code) == (
        DeliveryStatus.FAILED,
        3,
        now,
        503,
    )
    assert hook.enabled
    assert hook.consecutive_failures == 3
    assert webhooks.backoff(30, 10) == webhooks.MAX_BACKOFF_SECONDS


async def test_a_webhook_that_keeps_failing_is_disabled_with_its_queue(
    session: AsyncSession,
) -> None:
    hook_id = await _hook(session)
    for i in range(3):
        await webhooks.enqueue(
            session, event_type="alert", device_id=None, payload={"i": i}, ts=NOW, now=NOW
        )
    await session.commit()
    first, second, third = sorted(await _all(session, hook_id), key=lambda d: d.id)
    ok, _, _ = await webhooks.record(
        session,
        delivery_id=first.id,
        outcome=OK,
        now=NOW + 1,
        max_attempts=10,
        backoff_base=10,
        disable_after=2,
    )
    assert ok is not None
    assert ok.status == DeliveryStatus.DELIVERED
    results = []
    for _ in range(2):
        results.append(
            await webhooks.record(
                session,
                delivery_id=second.id,
                outcome=FAILED,
                now=NOW + 2,
                max_attempts=10,
                backoff_base=10,
                disable_after=2,
            )
        )
        await session.commit()
    assert [disabled for _, _, disabled in results] == [False, True]
    hook = await webhooks.get(session, hook_id)
    assert not hook.enabled
    assert hook.disabled_reason is not None
    assert hook.disabled_reason.startswith("disabled after 2 failed attempts in a row")
    assert hook.last_success_at == NOW + 1
    session.expire_all()  # the queue was ended by one UPDATE in the database
    statuses = {d.id: (d.status, d.last_error) for d in await _all(session, hook_id)}
    assert statuses == {
        first.id: (DeliveryStatus.DELIVERED, None),
        second.id: (DeliveryStatus.FAILED, None),
        third.id: (DeliveryStatus.FAILED, "webhook disabled"),  # never sent
    }
    assert await webhooks.subscriptions(session) == []

    # Enabled again by a person: it counts afresh.
    await webhooks.update_webhook(session, webhook_id=hook_id, allow_private=False, enabled=True)
    await session.commit()
    hook = await webhooks.get(session, hook_id)
    assert (hook.enabled, hook.disabled_reason, hook.consecutive_failures) == (True, None, 0)
