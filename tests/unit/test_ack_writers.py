"""The worker's ack writers (worker.control): the queue logic alone, the database stood
in for by a write that completes when the test says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from iotp.protocol.payloads import Ack
from iotp.services.commands import AckOutcome
from iotp.settings import Settings
from iotp.worker.control import ACK_CONCURRENCY, ControlPlane


async def _nothing_published(_topic: str, _payload: bytes) -> None:
    raise AssertionError("nothing is published here")


async def test_an_ack_that_comes_as_every_writer_finishes_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = ControlPlane(
        settings=Settings(data_dir=tmp_path),
        sessions=None,  # type: ignore[arg-type]
        publish_event=lambda *_: None,
        publish_confirmed=_nothing_published,
    )
    gate = asyncio.Event()

    async def write(batch: list[Any]) -> list[tuple[AckOutcome, None]]:
        await gate.wait()
        return [(AckOutcome.UNKNOWN, None) for _ in batch]

    monkeypatch.setattr(control, "_apply_acks", write)
    first = []
    for i in range(ACK_CONCURRENCY):
        first.append(asyncio.create_task(control.on_ack(f"D{i}", Ack(id=f"c{i}", status="ok"), 1)))
        for _ in range(2):
            await asyncio.sleep(0)  # each ack's writer starts and takes it
    assert len(control._ack_writers) == ACK_CONCURRENCY

    async def late() -> None:
        await gate.wait()  # woken in the same pass as the writers finishing
        await control.on_ack("D9", Ack(id="c9", status="ok"), 1)

    last = asyncio.create_task(late())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*first)
    await asyncio.wait_for(last, 2)
    assert not control._ack_writers
