"""Running a component's background loops together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait for them; their errors are not the caller's business
    any more (they have been logged where they happened)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def run_together(loops: dict[str, Coroutine[Any, Any, None]]) -> None:
    """Run named loops until one fails or the caller is cancelled; then stop them all."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)
