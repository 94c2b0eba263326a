"""Issuing a command (services.commands.issue, the one path for the API, bulk, rules,
the shadow and rollouts) on a real database: validated, stored, and announced only once
the caller's transaction commits."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import CommandRow, Device
from iotp.errors import InvalidRequestError, NotFoundError
from iotp.protocol.events import CommandStatus, EventType
from iotp.services import commands

NOW = 1_800_000_000.0


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any], float]] = []

    def __call__(self, kind: str, device_id: str, payload: dict[str, Any], ts: float) -> None:
        self.seen.append((kind, device_id, payload, ts))

    def statuses(self) -> list[tuple[str, str]]:
        assert all(kind == EventType.COMMAND_UPDATE for kind, *_ in self.seen)
        return [(payload["device_id"], payload["status"]) for _, _, payload, _ in self.seen]


async def _devices(session: AsyncSession) -> None:
    for device_id, online in (("ON-1", True), ("OFF-1", False)):
        session.add(
            Device(
                id=device_id,
                name=device_id,
                capabilities=["relay:light", "servo"],
                firmware_version="1.0.0",
                status="online" if online else "offline",
                first_seen=NOW,
            )
        )
    await session.commit()


async def _issue(session: AsyncSession, events: Events, device: str, **kw: Any) -> CommandRow:
    args: dict[str, Any] = {
        "command": "relay",
        "params": {"name": "light", "state": True},
        "source": "api",
        "now": NOW,
        "claim_if_online": "api:1",
        **kw,
    }
    return await commands.issue(session, device=device, publish_event=events, **args)


async def test_announced_when_committed_claimed_only_when_online(session: AsyncSession) -> None:
    await _devices(session)
    events = Events()
    online = await _issue(session, events, "ON-1")
    offline = await _issue(session, events, "OFF-1")
    assert online.params == {"name": "light", "state": "on"}  # normalised
    assert events.seen == []  # nothing is announced before it is stored
    await session.commit()
    assert events.statuses() == [("ON-1", "sending"), ("OFF-1", "queued")]
    assert online.claimed_by == "api:1"
    assert offline.claimed_by is None
    _kind, device_id, payload, ts = events.seen[0]
    assert (device_id, payload["id"], ts) == ("ON-1", online.id, NOW)
    assert payload == commands.to_dict(online)


async def test_nothing_is_announced_for_a_rolled_back_command(session: AsyncSession) -> None:
    await _devices(session)
    events = Events()
    await _issue(session, events, "ON-1")
    await session.rollback()
    await session.commit()
    async with session.begin():
        async with session.begin_nested() as savepoint:
            await _issue(session, events, "ON-1", params={"name": "light", "state": "off"})
            await savepoint.rollback()
        kept = await _issue(session, events, "OFF-1")
    assert [(p["id"], p["status"]) for _, _, p, _ in events.seen] == [(kept.id, "queued")]
    stored = (await session.scalars(select(CommandRow.id))).all()
    assert list(stored) == [kept.id]


async def test_each_savepoint_is_announced_with_the_outer_commit(session: AsyncSession) -> None:
    """Rules issue one command per device, each in its own savepoint."""
    await _devices(session)
    events = Events()
    async with session.begin():
        for device in ("ON-1", "OFF-1"):
            async with session.begin_nested():
                await _issue(session, events, device)
        assert events.seen == []
    assert events.statuses() == [("ON-1", "sending"), ("OFF-1", "queued")]


@pytest.mark.parametrize(
    ("device", "command", "params", "error", "reason"),
    [
        ("ON-1", "relay", {"name": "pump", "state": "on"}, InvalidRequestError, "no relay 'pump'"),
        ("ON-1", "ota", {}, InvalidRequestError, "capability 'ota'"),
        ("ON-1", "servo", {"angle": 500}, InvalidRequestError, "angle"),
        (
            "ON-1",
            "relay",
            {"name": "light", "state": "on", "wifi_password": "x"},
            InvalidRequestError,
            "secret",
        ),
        ("NOPE", "relay", {"name": "light", "state": "on"}, NotFoundError, "NOPE"),
    ],
)
async def test_a_bad_command_is_refused_with_its_reason_and_not_stored(
    session: AsyncSession,
    device: str,
    command: str,
    params: dict[str, Any],
    error: type[Exception],
    reason: str,
) -> None:
    await _devices(session)
    events = Events()
    with pytest.raises(error, match=reason):
        await _issue(session, events, device, command=command, params=params)
    await session.commit()
    assert events.seen == []
    assert (await session.scalars(select(CommandRow.id))).all() == []


async def test_secret_parameters_are_sealed_and_redacted(session: AsyncSession) -> None:
    await _devices(session)
    events = Events()
    box = commands.SecretBox("k" * 32)
    row = await _issue(
        session,
        events,
        "ON-1",
        command="set_config",
        params={"wifi_password": "hunter22", "interval": 5},
        box=box,
    )
    await session.commit()
    assert row.params == {"wifi_password": "[secret]", "interval": 5}
    assert events.seen[0][2]["params"] == row.params
    assert row.secret_params is not None
    assert "hunter22" not in row.secret_params
    assert commands.wire_payload(row, box)["params"]["wifi_password"] == "hunter22"
    assert row.status == CommandStatus.SENDING
