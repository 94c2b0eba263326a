"""``?wait=true`` for commands: futures resolved by whichever comes first of

* the device's own ack (``devices/{id}/ack``, which every API process also receives):
  the answer is the device's word, a few milliseconds before the worker has recorded
  it; the worker stays the only recorder, and its ``command_update`` follows;
* the ``command_update`` events this API process receives from the broker (so any API
  replica can wait on a command that any worker dispatched, and a command that times
  out, expires or is cancelled ends the wait too).

The status a final ack makes is decided in one place, ``services.commands.ack_ending``.
An ack resolves a wait only when it is a final ack (``ok``/``error``), comes on the
command's own device's topic, and arrives well before the command's timeout (the worker
could otherwise record it as late, after the deadline); everything else is left to the
worker's event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson

from iotp.protocol.payloads import Ack, RejectedMessage, parse_ack
from iotp.services.commands import ack_ending, is_terminal
from iotp.services.times import epoch, iso_time

# An ack this close to the command's timeout is left to the worker to judge.
ACK_DEADLINE_MARGIN_SECONDS = 1.0


class CommandWaiters:
    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._known: dict[str, dict[str, Any]] = {}  # the command as created

    def watch(
        self, commands: Mapping[str, dict[str, Any]]
    ) -> dict[str, asyncio.Future[dict[str, Any]]]:
        """Register before the command can finish, so no ack or event is missed.
        ``commands``: id -> the command as created (``commands.to_dict``)."""
        loop = asyncio.get_running_loop()
        out: dict[str, asyncio.Future[dict[str, Any]]] = {}
        for cid, command in commands.items():
            fut = self._futures.get(cid)
            if fut is None or fut.done():
                fut = self._futures[cid] = loop.create_future()
            self._known[cid] = command
            out[cid] = fut
        return out

    def forget(self, command_ids: Mapping[str, Any]) -> None:
        for cid in command_ids:
            self._known.pop(cid, None)
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

    def feed_ack(self, device_id: str, payload: bytes | Ack, now: float | None = None) -> bool:
        """A device's ack as published on ``devices/{device_id}/ack`` (raw or parsed).
        Returns whether it ended a wait. Bad acks are ignored here: the worker counts and
        logs them."""
        if not self._futures:
            return False
        if isinstance(payload, Ack):
            ack = payload
        else:
            try:
                ack = parse_ack(payload)
            except RejectedMessage:
                return False
        if ack.id is None or ack.status == "progress":
            return False
        fut = self._futures.get(ack.id)
        command = self._known.get(ack.id)
        if fut is None or fut.done() or command is None:
            return False
        if command.get("device_id") != device_id:
            return False  # only the command's own device can answer it
        now = time.time() if now is None else now
        timeout = float(command.get("timeout") or 0.0)
        if now + ACK_DEADLINE_MARGIN_SECONDS > epoch(command["created_at"]) + timeout:
            return False  # near or past its timeout: the worker decides (acked or late)
        ending = ack_ending(ack)  # the same ending the worker will record
        fut.set_result(
            {
                **command,
                **ending,
                "status": ending["status"].value,
                "sent_at": command.get("sent_at") or iso_time(now),
                "finished_at": iso_time(now),
            }
        )
        return True

    def __len__(self) -> int:
        return len(self._futures)
