"""The command lifecycle on a real database: every write follows the transition table,
so a late or repeated message cannot move a command backwards. No broker: the service
functions are called as the API and the worker call them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import CommandRow, Device
from iotp.protocol.events import CommandStatus
from iotp.protocol.payloads import Ack
from iotp.services import commands
from iotp.services.commands import AckOutcome, InvalidTransition

NOW = 1_800_000_000.0
DEVICE = "ESP32-AAAAAA"


def _unheard(*_event: Any) -> None:
    """Events are tested in test_command_issue.py."""


async def _device(session: AsyncSession, *, online: bool = True, acks: bool = True) -> None:
    session.add(
        Device(
            id=DEVICE,
            name=DEVICE,
            capabilities=["relay:light"],
            firmware_version="1.0.0",
            status="online" if online else "offline",
            first_seen=NOW,
            acks=acks,
        )
    )
    await session.commit()


async def _sent(session: AsyncSession, *, timeout: float = 5.0) -> CommandRow:
    row = await commands.issue(
        session,
        device=DEVICE,
        command="relay",
        params={"name": "light", "state": "on"},
        ack_timeout=timeout,
        now=NOW,
        claim_if_online="api:1",
        source="api",
        publish_event=_unheard,
    )
    await session.commit()
    assert row.status == CommandStatus.SENDING
    (sent,) = await commands.mark_sent(session, command_ids=[row.id], owner="api:1", now=NOW)
    await session.commit()
    assert sent.status == CommandStatus.SENT
    return sent


async def _status(session: AsyncSession, command_id: str) -> str:
    row = await session.get(CommandRow, command_id, populate_existing=True)
    assert row is not None
    return row.status


async def test_an_ack_after_the_timeout_does_not_reopen_the_command(
    session: AsyncSession,
) -> None:
    await _device(session)
    row = await _sent(session, timeout=5.0)
    ended = await commands.sweep(session, now=NOW + 6.0)
    await session.commit()
    assert [(r.id, r.status) for r in ended] == [(row.id, CommandStatus.TIMED_OUT)]

    outcome, late = await commands.apply_ack(
        session, device_id=DEVICE, ack=Ack(id=row.id, status="ok"), now=NOW + 7.0
    )
    await session.commit()
    assert outcome is AckOutcome.LATE
    assert late is not None
    assert late.history[-1]["note"] == "late_ack"
    assert await _status(session, row.id) == CommandStatus.TIMED_OUT


async def test_a_final_ack_is_final(session: AsyncSession) -> None:
    await _device(session)
    row = await _sent(session)
    outcome, acked = await commands.apply_ack(
        session, device_id=DEVICE, ack=Ack(id=row.id, status="ok", result=1), now=NOW + 1
    )
    await session.commit()
    assert outcome is AckOutcome.FINAL
    assert acked is not None
    assert (acked.status, acked.finished_at) == (CommandStatus.ACKED, NOW + 1)

    again, _ = await commands.apply_ack(
        session, device_id=DEVICE, ack=Ack(id=row.id, status="error"), now=NOW + 2
    )
    progress, _ = await commands.apply_ack(
        session, device_id=DEVICE, ack=Ack(id=row.id, status="progress", result=5), now=NOW + 3
    )
    await session.commit()
    assert (again, progress) == (AckOutcome.DUPLICATE, AckOutcome.DUPLICATE)
    # Neither a PUBACK recorded late, nor a release, nor a sweep moves it.
    assert await commands.mark_sent(session, command_ids=[row.id], owner="api:1", now=NOW) == []
    assert await commands.release(session, command_ids=[row.id], owner=None, now=NOW) == []
    assert await commands.sweep(session, now=NOW + 3600) == []
    await session.commit()
    assert await _status(session, row.id) == CommandStatus.ACKED


@pytest.mark.parametrize("first", ["progress", "ok"])
async def test_a_device_that_acks_once_is_treated_as_acking(
    session: AsyncSession, first: str
) -> None:
    await _device(session, acks=False)  # never acked: its sent commands get no deadline
    row = await _sent(session)
    assert row.deadline is None
    outcome, _ = await commands.apply_ack(
        session,
        device_id=DEVICE,
        ack=Ack(id=row.id, status=first),
        now=NOW + 1,  # type: ignore[arg-type]
    )
    await session.commit()
    assert outcome is (AckOutcome.PROGRESS if first == "progress" else AckOutcome.FINAL)
    device = await session.get(Device, DEVICE, populate_existing=True)
    assert device is not None
    assert device.acks
    assert (await _sent(session)).deadline is not None  # its next command has one


async def test_an_ack_before_the_puback_ends_the_command(session: AsyncSession) -> None:
    """The device answered before the publisher recorded the broker's PUBACK."""
    await _device(session)
    row = await commands.issue(
        session,
        device=DEVICE,
        command="relay",
        params={"name": "light", "state": "on"},
        now=NOW,
        claim_if_online="api:1",
        source="api",
        publish_event=_unheard,
    )
    await session.commit()
    outcome, acked = await commands.apply_ack(
        session, device_id=DEVICE, ack=Ack(id=row.id, status="error", error="jammed"), now=NOW
    )
    await session.commit()
    assert outcome is AckOutcome.FINAL
    assert acked is not None
    assert (acked.status, acked.error, acked.sent_at) == (CommandStatus.FAILED, "jammed", NOW)
    assert await commands.mark_sent(session, command_ids=[row.id], owner="api:1", now=NOW) == []
    await session.commit()
    assert await _status(session, row.id) == CommandStatus.FAILED


async def test_only_a_queued_command_is_cancelled(session: AsyncSession) -> None:
    await _device(session, online=False)
    queued = await commands.issue(
        session,
        device=DEVICE,
        command="relay",
        params={"name": "light", "state": "on"},
        now=NOW,
        claim_if_online="api:1",
        source="api",
        publish_event=_unheard,
    )
    await session.commit()
    assert queued.status == CommandStatus.QUEUED  # offline: left for a worker
    cancelled = await commands.cancel(session, command_id=queued.id, now=NOW + 1)
    await session.commit()
    assert (cancelled.status, cancelled.finished_at) == (CommandStatus.CANCELLED, NOW + 1)
    assert (
        await commands.claim(
            session, device_ids=[DEVICE], now=NOW + 2, owner="w", require_online=False
        )
        == []
    )
    with pytest.raises(InvalidTransition):
        await commands.cancel(session, command_id=queued.id, now=NOW + 3)


async def test_a_stale_claim_is_published_again(session: AsyncSession) -> None:
    await _device(session)
    row = await commands.issue(
        session,
        device=DEVICE,
        command="relay",
        params={"name": "light", "state": "on"},
        now=NOW,
        claim_if_online="api:dead",
        source="api",
        publish_event=_unheard,
    )
    await session.commit()
    assert await commands.sweep(session, now=NOW + 1) == []  # claim still fresh
    requeued = await commands.sweep(session, now=NOW + commands.CLAIM_TIMEOUT + 1)
    await session.commit()
    assert [(r.id, r.status) for r in requeued] == [(row.id, CommandStatus.QUEUED)]
    # The dead publisher's PUBACK, recorded late, no longer counts: it lost the claim.
    assert (
        await commands.mark_sent(session, command_ids=[row.id], owner="api:dead", now=NOW + 20)
        == []
    )
