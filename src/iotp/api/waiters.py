"""``?wait=true`` for commands: futures resolved by the ``command_update`` events this
API process already receives from the broker (so any API replica can wait on a
command that any worker dispatched)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson

from iotp.services.commands import is_terminal


class CommandWaiters:
    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def watch(self, command_ids: Iterable[str]) -> dict[str, asyncio.Future[dict[str, Any]]]:
        """Register before the command can finish, so no event is missed."""
        loop = asyncio.get_running_loop()
        out: dict[str, asyncio.Future[dict[str, Any]]] = {}
        for cid in command_ids:
            fut = self._futures.get(cid)
            if fut is None or fut.done():
                fut = self._futures[cid] = loop.create_future()
            out[cid] = fut
        return out

    def forget(self, command_ids: Iterable[str]) -> None:
        for cid in command_ids:
            fut = self._futures.pop(cid, None)
            if fut is not None and not fut.done():
                fut.cancel()

    def feed(self, event: bytes) -> None:
        """A ``command_update`` event from the broker."""
        if not self._futures:
            return
        try:
            command = orjson.loads(event).get("payload") or {}
            cid = command.get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return
        fut = self._futures.get(cid) if isinstance(cid, str) else None
        if fut is not None and not fut.done() and is_terminal(command.get("status", "")):
            fut.set_result(command)

    def __len__(self) -> int:
        return len(self._futures)
