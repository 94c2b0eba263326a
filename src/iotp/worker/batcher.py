"""Batched telemetry writes: flush by size or age, retried until stored, never dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from iotp.services.telemetry import Row

log = logging.getLogger(__name__)

RETRY_INITIAL_SECONDS = 0.05


class _Batch:
    __slots__ = ("done", "first_at", "rows")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_at = 0.0


class TelemetryBatcher:
    """Collects rows; every caller of ``add`` gets the future of the batch its row is in,
    resolved once that batch is committed (then the MQTT PUBACK may go out)."""

    def __init__(
        self,
        store: Callable[[list[Row]], Awaitable[int]],
        *,
        max_rows: int,
        max_delay: float,
        retry_max: float,
        on_stored: Callable[[int, int, float], None],
    ) -> None:
        self._store = store
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.retry_max = retry_max
        self._on_stored = on_stored
        self._current = _Batch()
        self._sealed: deque[_Batch] = deque()
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self.pending_rows = 0
        self.failing_since: float | None = None

    def add(self, row: Row) -> asyncio.Future[None]:
        batch = self._current
        if not batch.rows:
            batch.first_at = time.monotonic()
            self._wakeup.set()
        batch.rows.append(row)
        self.pending_rows += 1
        if len(batch.rows) >= self.max_rows:
            self._sealed.append(batch)
            self._current = _Batch()
            self._full.set()
        return batch.done

    async def run(self) -> None:
        """Flush loop; returns after ``stop()`` once everything pending is stored."""
        while True:
            if self._sealed:
                await self._flush(self._sealed.popleft())
                continue
            batch = self._current
            if not batch.rows:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = batch.first_at + self.max_delay - time.monotonic()
            if wait > 0 and not self._stopping:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
                continue  # re-check: the batch may have been sealed meanwhile
            self._current = _Batch()
            await self._flush(batch)

    async def _flush(self, batch: _Batch) -> None:
        delay = RETRY_INITIAL_SECONDS
        started = time.monotonic()
        while True:
            try:
                inserted = await self._store(batch.rows)
                break
            except Exception as exc:  # noqa: BLE001 - any storage failure is retried
                if self.failing_since is None:
                    self.failing_since = time.time()
                log.warning(
                    "storing %d telemetry rows failed (%s: %s); retrying in %.2f s",
                    len(batch.rows),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
        self.failing_since = None
        self.pending_rows -= len(batch.rows)
        self._on_stored(len(batch.rows), inserted, time.monotonic() - started)
        batch.done.set_result(None)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        self._full.set()
