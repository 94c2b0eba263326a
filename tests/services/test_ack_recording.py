"""The worker's recording of device acks (worker.control) on a real database: acks that
arrive together share a transaction, and one that cannot be recorded loses no other."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db.models import CommandRow, Device
from iotp.protocol.events import CommandStatus
from iotp.protocol.payloads import Ack
from iotp.services import commands
from iotp.settings import Settings
from iotp.worker import control as control_module
from iotp.worker.control import ControlPlane

DEVICES = [f"ESP32-{i:06X}" for i in range(5)]


async def _issue(sessions: async_sessionmaker[AsyncSession], per_device: int) -> list[CommandRow]:
    async with sessions() as session:
        for device_id in DEVICES:
            session.add(
                Device(
                    id=device_id,
                    name=device_id,
                    capabilities=["relay:light"],
                    status="online",
                    first_seen=0.0,
                )
            )
        await session.flush()
        rows = [
            await commands.issue(
                session,
                device=device_id,
                command="relay",
                params={"name": "light", "state": "on"},
                claim_if_online="api:1",
                source="api",
                publish_event=lambda *_: None,
            )
            for device_id in DEVICES
            for _ in range(per_device)
        ]
        await session.commit()
    return rows


def _control(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, events: list[dict[str, Any]]
) -> ControlPlane:
    async def never_published(_topic: str, _payload: bytes) -> None:
        raise AssertionError("nothing is published here")

    return ControlPlane(
        settings=Settings(data_dir=tmp_path),
        sessions=sessions,
        publish_event=lambda _type, _device, command, _ts: events.append(command),
        publish_confirmed=never_published,
    )


def _count_commits(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    commits = [0]
    engine = sessions.kw["bind"]

    @event.listens_for(engine.sync_engine, "commit")
    def counted(_conn: Any) -> None:
        commits[0] += 1

    return commits


async def _statuses(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with sessions() as session:
        return {row.id: row.status for row in (await session.scalars(select(CommandRow))).all()}


async def test_acks_that_arrive_together_are_recorded_in_one_transaction(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    rows = await _issue(sessions, per_device=10)
    events: list[dict[str, Any]] = []
    control = _control(sessions, tmp_path, events)
    commits = _count_commits(sessions)
    now = time.time()
    await asyncio.gather(
        *(control.on_ack(row.device_id, Ack(id=row.id, status="ok"), now) for row in rows)
    )
    assert set((await _statuses(sessions)).values()) == {CommandStatus.ACKED}
    assert control.counters["acks_final"] == len(rows) == 50
    assert commits[0] == 1
    # Each command's end is announced, as each ack alone would have announced it.
    assert sorted(e["id"] for e in events if e["status"] == "acked") == sorted(
        row.id for row in rows
    )


async def test_one_ack_that_fails_to_record_loses_no_other(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = await _issue(sessions, per_device=4)
    bad = rows[7].id
    apply_acks = commands.apply_acks

    async def failing_for_one(session: AsyncSession, acks: Any) -> Any:
        if any(ack.id == bad for _device, ack, _now in acks):
            raise RuntimeError("this ack cannot be recorded")
        return await apply_acks(session, acks)

    monkeypatch.setattr(control_module.command_service, "apply_acks", failing_for_one)
    control = _control(sessions, tmp_path, [])
    now = time.time()
    await asyncio.gather(
        *(control.on_ack(row.device_id, Ack(id=row.id, status="ok"), now) for row in rows)
    )
    statuses = await _statuses(sessions)
    assert statuses.pop(bad) == CommandStatus.SENDING
    assert set(statuses.values()) == {CommandStatus.ACKED}
    assert control.counters["acks_failed_to_record"] == 1
    assert control.counters["acks_final"] == len(rows) - 1


async def test_progress_then_the_end_of_one_command_each_show_their_own_state(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Two acks of one command in the same burst go in separate transactions, in order:
    the progress event shows the command in progress, the next one shows it acked."""
    (row, *_) = await _issue(sessions, per_device=1)
    events: list[dict[str, Any]] = []
    control = _control(sessions, tmp_path, events)
    now = time.time()
    await asyncio.gather(
        control.on_ack(row.device_id, Ack(id=row.id, status="progress", result=50), now),
        control.on_ack(row.device_id, Ack(id=row.id, status="ok"), now + 0.001),
    )
    progress, *_, final = [e for e in events if e["id"] == row.id]
    assert progress["status"] == CommandStatus.SENDING
    assert progress["progress"]["value"] == 50
    assert final["status"] == CommandStatus.ACKED


async def test_many_acks_in_one_call_each_get_what_one_alone_would(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    a, b, c, d, done, *_ = await _issue(sessions, per_device=1)
    async with sessions.begin() as session:
        await commands.apply_ack(
            session, device_id=done.device_id, ack=Ack(id=done.id, status="ok"), now=1.0
        )
    now = time.time()
    acks = [
        (a.device_id, Ack(id=a.id, status="ok", result={"state": "on"}), now),
        (b.device_id, Ack(id=b.id, status="error", error="relay stuck"), now),
        (c.device_id, Ack(id=c.id, status="progress", result=40), now),
        (a.device_id, Ack(id=a.id, status="ok"), now),  # the device said it twice
        (b.device_id, Ack(id=d.id, status="ok"), now),  # another device's command
        (done.device_id, Ack(id=done.id, status="ok"), now),  # ended before
        (a.device_id, Ack(id="no-such-command", status="ok"), now),
    ]
    async with sessions.begin() as session:
        results = await commands.apply_acks(session, acks)
    assert [outcome for outcome, _ in results] == [
        commands.AckOutcome.FINAL,
        commands.AckOutcome.FINAL,
        commands.AckOutcome.PROGRESS,
        commands.AckOutcome.DUPLICATE,
        commands.AckOutcome.UNKNOWN,
        commands.AckOutcome.DUPLICATE,
        commands.AckOutcome.UNKNOWN,
    ]
    async with sessions() as session:
        stored = {row.id: row for row in (await session.scalars(select(CommandRow))).all()}
        devices = {row.id: row for row in (await session.scalars(select(Device))).all()}
    assert stored[a.id].status == CommandStatus.ACKED
    assert stored[a.id].result == {"state": "on"}
    assert stored[a.id].sent_at == stored[a.id].finished_at == now
    assert stored[b.id].status == CommandStatus.FAILED
    assert stored[b.id].error == "relay stuck"
    assert stored[c.id].status == CommandStatus.SENDING
    assert stored[c.id].progress is not None
    assert stored[c.id].progress["value"] == 40
    assert stored[d.id].status == CommandStatus.SENDING  # not ended by another device
    assert stored[done.id].finished_at == 1.0
    # Devices that answered are known to acknowledge from now on; the one whose command
    # another device tried to end is not.
    assert devices[a.device_id].acks
    assert devices[b.device_id].acks
    assert not devices[d.device_id].acks


@pytest.mark.parametrize(
    "sessions", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_the_sweep_passes_over_a_command_being_changed_instead_of_waiting(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A stale claim whose row another transaction holds (its ack being recorded) is left
    to that transaction; the other stale claims are released at once. Waiting for the row
    could deadlock with a batch of acks."""
    held, *others = await _issue(sessions, per_device=1)
    later = time.time() + commands.CLAIM_TIMEOUT + 1
    async with sessions() as holder, sessions() as sweeper:
        await holder.execute(select(CommandRow).where(CommandRow.id == held.id).with_for_update())
        async with asyncio.timeout(5):
            released = await commands.sweep(sweeper, now=later)
            await sweeper.commit()
        await holder.rollback()
    assert sorted(row.id for row in released) == sorted(row.id for row in others)
    statuses = await _statuses(sessions)
    assert statuses[held.id] == CommandStatus.SENDING
    assert {statuses[row.id] for row in others} == {CommandStatus.QUEUED}


async def test_a_burst_with_the_progress_and_the_end_of_one_command_keeps_their_order(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Among other answers from devices not yet known to acknowledge (each first ack
    marks its device): the progress is recorded before the end, nothing deadlocks, no ack
    is lost."""
    rows = await _issue(sessions, per_device=2)
    x = max(rows, key=lambda r: r.id)
    others = [r for r in rows if r is not x]
    events: list[dict[str, Any]] = []
    control = _control(sessions, tmp_path, events)
    now = time.time()
    await asyncio.gather(
        *(control.on_ack(r.device_id, Ack(id=r.id, status="ok"), now) for r in others),
        control.on_ack(x.device_id, Ack(id=x.id, status="progress", result=50), now),
        control.on_ack(x.device_id, Ack(id=x.id, status="ok"), now + 0.001),
    )
    assert control.counters["acks_failed_to_record"] == 0
    assert control.counters["acks_progress"] == 1
    assert control.counters["acks_final"] == len(rows)
    assert set((await _statuses(sessions)).values()) == {CommandStatus.ACKED}
    mine = [e for e in events if e["id"] == x.id]
    assert mine[0]["progress"]["value"] == 50
    assert mine[-1]["status"] == CommandStatus.ACKED


async def test_one_call_with_a_commands_progress_then_its_end_records_both_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    x, *others = await _issue(sessions, per_device=1)
    now = time.time()
    acks = [
        (x.device_id, Ack(id=x.id, status="progress", result=10), now),
        (x.device_id, Ack(id=x.id, status="ok"), now),
        *((r.device_id, Ack(id=r.id, status="ok"), now) for r in others),
    ]
    async with sessions.begin() as session:
        results = await commands.apply_acks(session, acks)
    assert [outcome for outcome, _ in results] == [
        commands.AckOutcome.PROGRESS,
        *[commands.AckOutcome.FINAL] * (1 + len(others)),
    ]


async def test_a_batch_committed_though_its_answer_was_lost_still_announces_each_end(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops as the database commits: the batch raises though its acks are
    stored. Tried again one by one, each command has already ended; its end is announced
    then, or no client would ever hear of it."""
    rows = await _issue(sessions, per_device=4)
    events: list[dict[str, Any]] = []
    control = _control(sessions, tmp_path, events)
    real = control._apply_acks
    lost = [0]

    async def committed_then_lost(batch: Any) -> Any:
        results = await real(batch)  # committed
        if len(batch) > 1 and not lost[0]:
            lost[0] += 1
            raise ConnectionError("connection lost before the COMMIT's answer")
        return results

    monkeypatch.setattr(control, "_apply_acks", committed_then_lost)
    now = time.time()
    await asyncio.gather(
        *(control.on_ack(row.device_id, Ack(id=row.id, status="ok"), now) for row in rows)
    )
    assert lost[0] == 1
    assert set((await _statuses(sessions)).values()) == {CommandStatus.ACKED}
    assert sorted(e["id"] for e in events if e["status"] == "acked") == sorted(
        row.id for row in rows
    )
    assert control.counters["acks_final"] == len(rows)
    assert control.counters["acks_failed_to_record"] == 0


@pytest.mark.parametrize(
    "sessions", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_due_command_held_by_another_transaction_is_swept_later_not_in_a_loop(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep skips a row another transaction holds; it comes back for it a little
    later, not every few milliseconds while the row stays held, and moves it once free."""
    held, *others = await _issue(sessions, per_device=1)
    async with sessions.begin() as session:  # stale claims; offline: nothing to claim again
        await session.execute(
            update(CommandRow).values(claimed_at=CommandRow.claimed_at - commands.CLAIM_TIMEOUT - 5)
        )
        await session.execute(update(Device).values(status="offline"))
    sweeps = [0]
    real_sweep = control_module.command_service.sweep

    async def counted(session: AsyncSession, *, now: float) -> list[CommandRow]:
        sweeps[0] += 1
        return await real_sweep(session, now=now)

    monkeypatch.setattr(control_module.command_service, "sweep", counted)
    events: list[dict[str, Any]] = []
    control = _control(sessions, tmp_path, events)
    async with sessions() as holder:
        await holder.execute(select(CommandRow).where(CommandRow.id == held.id).with_for_update())
        loop = asyncio.create_task(control._sweep_loop())
        await asyncio.sleep(1.0)
        assert sorted(e["id"] for e in events) == sorted(row.id for row in others)
        assert sweeps[0] <= 1 / control_module.SWEEP_LOCKED_RETRY_SECONDS + 2
        await holder.rollback()
    try:
        async with asyncio.timeout(2):
            while held.id not in {e["id"] for e in events}:
                await asyncio.sleep(0.02)
    finally:
        control._stopping = True
        control._sweep_wake.set()
        await asyncio.wait_for(loop, 5)
    assert (await _statuses(sessions))[held.id] == CommandStatus.QUEUED
