"""Publishing claimed commands and recording them `sent` (services.command_sender) on a
real database; the broker's PUBACK is stood in for by a publish that completes."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db.models import CommandRow, Device
from iotp.protocol.events import CommandStatus
from iotp.protocol.payloads import Ack
from iotp.services import commands
from iotp.services.command_sender import Sender
from iotp.services.commands import SecretBox

DEVICE = "ESP32-AAAAAA"
OWNER = "api:1"


async def _issue(sessions: async_sessionmaker[AsyncSession], n: int) -> list[CommandRow]:
    async with sessions() as session:
        if await session.get(Device, DEVICE) is None:
            session.add(
                Device(
                    id=DEVICE,
                    name=DEVICE,
                    capabilities=["relay:light"],
                    firmware_version="1.0.0",
                    status="online",
                    first_seen=0.0,
                    acks=True,
                )
            )
            await session.flush()
        rows = [
            await commands.issue(
                session,
                device=DEVICE,
                command="relay",
                params={"name": "light", "state": "on"},
                claim_if_online=OWNER,
                source="api",
                publish_event=lambda *_: None,
            )
            for _ in range(n)
        ]
        await session.commit()
    return rows


def _sender(
    sessions: async_sessionmaker[AsyncSession], on_publish: Any, events: list[dict[str, Any]]
) -> Sender:
    async def publish_confirmed(topic: str, payload: bytes) -> None:
        on_publish(topic, payload)  # returning is the broker's PUBACK

    return Sender(
        sessions=sessions,
        owner=OWNER,
        publish_confirmed=publish_confirmed,
        publish_event=lambda _type, _device, command, _ts: events.append(command),
        box=SecretBox("test-secret-key"),
    )


async def _status(sessions: async_sessionmaker[AsyncSession], cid: str) -> str:
    async with sessions() as session:
        row = await session.get(CommandRow, cid)
        assert row is not None
        return row.status


async def test_a_command_its_device_answered_is_not_recorded_sent(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    answered, unanswered = await _issue(sessions, 2)
    events: list[dict[str, Any]] = []
    sender: Sender

    def device_answers(topic: str, payload: bytes) -> None:
        # The device's ack for the first command reaches this process before the
        # PUBACK does; the ack's recorder (the worker) moves it from `sending` to acked.
        if answered.id.encode() in payload:
            sender.answered(DEVICE, Ack(id=answered.id, status="ok"))

    sender = _sender(sessions, device_answers, events)
    sent = await sender.send([answered, unanswered])
    assert [row.id for row in sent] == [unanswered.id]
    assert await _status(sessions, answered.id) == CommandStatus.SENDING
    assert await _status(sessions, unanswered.id) == CommandStatus.SENT
    assert [(e["id"], e["status"]) for e in events] == [(unanswered.id, "sent")]


async def test_only_a_final_ack_from_the_commands_own_device_spares_the_record(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    (row,) = await _issue(sessions, 1)
    events: list[dict[str, Any]] = []
    sender = _sender(sessions, lambda *_: None, events)
    task = asyncio.create_task(sender.send([row]))
    await asyncio.sleep(0)  # published; `sent` not recorded yet
    assert sender.recording
    sender.answered("ESP32-BBBBBB", Ack(id=row.id, status="ok"))  # another device
    sender.answered(DEVICE, Ack(id=row.id, status="progress", result={"pct": 10}))
    assert [r.id for r in await task] == [row.id]
    assert await _status(sessions, row.id) == CommandStatus.SENT
    assert not sender.recording
