from __future__ import annotations

import asyncio

from iotp.services.telemetry import Row
from iotp.worker.batcher import TelemetryBatcher


def _row(i: int) -> Row:
    return ("D", float(i), i, '{"t": 1}', None)


async def test_flushes_by_size_and_by_age() -> None:
    stored: list[list[Row]] = []

    async def store(rows: list[Row]) -> int:
        stored.append(list(rows))
        return len(rows)

    results: list[tuple[int, int]] = []
    batcher = TelemetryBatcher(
        store,
        max_rows=3,
        max_delay=0.05,
        retry_max=0.1,
        on_stored=lambda r, i, s: results.append((r, i)),
    )
    runner = asyncio.create_task(batcher.run())
    futures = [batcher.add(_row(i)) for i in range(4)]
    await asyncio.wait_for(asyncio.gather(*futures), 2)
    assert [len(b) for b in stored] == [3, 1]
    assert results == [(3, 3), (1, 1)]
    batcher.stop()
    await asyncio.wait_for(runner, 2)


async def test_failed_store_is_retried_and_nothing_dropped() -> None:
    calls = 0
    stored: list[Row] = []

    async def store(rows: list[Row]) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("database down")
        stored.extend(rows)
        return len(rows)

    batcher = TelemetryBatcher(
        store, max_rows=100, max_delay=0.01, retry_max=0.02, on_stored=lambda *a: None
    )
    runner = asyncio.create_task(batcher.run())
    done = batcher.add(_row(1))
    await asyncio.sleep(0.005)  # bounded: not stored (so not done) while the store fails
    assert not done.done()
    await asyncio.wait_for(done, 2)
    assert calls == 3
    assert stored == [_row(1)]
    assert batcher.failing_since is None
    batcher.stop()
    await asyncio.wait_for(runner, 2)


async def test_stop_flushes_pending_rows() -> None:
    stored: list[Row] = []

    async def store(rows: list[Row]) -> int:
        stored.extend(rows)
        return len(rows)

    batcher = TelemetryBatcher(
        store, max_rows=1000, max_delay=60, retry_max=1, on_stored=lambda *a: None
    )
    runner = asyncio.create_task(batcher.run())
    done = batcher.add(_row(1))
    await asyncio.sleep(0)
    batcher.stop()
    await asyncio.wait_for(runner, 2)
    assert done.done()
    assert stored == [_row(1)]
