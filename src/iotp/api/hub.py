"""WebSocket fan-out: per-client subscriptions and bounded queues, so a slow client never
slows ingest or the other clients (its excess events are dropped and counted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from iotp.protocol.events import EVENT_TYPES

log = logging.getLogger(__name__)

ALL = "*"
LIVE_TIMEOUT_SECONDS = 10.0
# Events one frame carries at most for a client that asked for batches.
MAX_BATCH = 500


class Client:
    __slots__ = ("batch", "devices", "dropped", "events", "queue", "ws")

    def __init__(self, ws: WebSocket, queue_size: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.events: set[str] = set()
        self.devices: set[str] = set()
        self.dropped = 0
        # Events already queued go out together, as one JSON array per frame: a frame
        # costs the same whether it carries one event or fifty, so a busy client costs
        # the API per frame, not per event. Opt-in, so a client reading one event per
        # frame keeps working.
        self.batch = False

    def wants(self, event_type: str, device_id: str) -> bool:
        return event_type in self.events and (ALL in self.devices or device_id in self.devices)


class Hub:
    def __init__(
        self,
        queue_size: int,
        on_interest_change: Callable[[], None] | None = None,
        until_live: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.clients: set[Client] = set()
        self.dropped_total = 0
        self._on_interest_change = on_interest_change
        # Awaited before a subscribe is answered: once it returns, every event the client
        # asked for reaches it (e.g. the broker has acknowledged the API's subscriptions).
        self._until_live = until_live

    def wanted_events(self) -> set[str]:
        out: set[str] = set()
        for c in self.clients:
            out |= c.events
        return out

    def broadcast(self, event_type: str, device_id: str, text: str) -> None:
        for client in self.clients:
            if client.wants(event_type, device_id):
                try:
                    client.queue.put_nowait(text)
                except asyncio.QueueFull:
                    client.dropped += 1
                    self.dropped_total += 1

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        client = Client(ws, self.queue_size)
        self.clients.add(client)
        sender = asyncio.create_task(self._send_loop(client))
        try:
            while True:
                message = await ws.receive_text()
                reply = await self._handle_request(client, message)
                await ws.send_text(reply)
        except WebSocketDisconnect:
            pass
        finally:
            self.clients.discard(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self._interest_changed()

    async def _send_loop(self, client: Client) -> None:
        reported_drops = 0
        queue = client.queue
        while True:
            text = await queue.get()
            if client.batch and not queue.empty():
                items = [text]
                while len(items) < MAX_BATCH and not queue.empty():
                    items.append(queue.get_nowait())
                text = "[" + ",".join(items) + "]"
            await client.ws.send_text(text)
            if client.dropped != reported_drops and queue.empty():
                reported_drops = client.dropped
                await client.ws.send_text(
                    orjson.dumps({"type": "dropped", "count": client.dropped}).decode()
                )

    async def _handle_request(self, client: Client, message: str) -> str:
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            return _error("invalid JSON")
        if not isinstance(req, dict):
            return _error("request must be a JSON object")
        action = req.get("action")
        if action == "ping":
            return orjson.dumps({"type": "pong"}).decode()
        if action not in ("subscribe", "unsubscribe"):
            return _error("action must be subscribe, unsubscribe or ping")
        events = req.get("events", sorted(EVENT_TYPES))
        devices = req.get("devices", [ALL])
        if not _str_list(events) or not _str_list(devices):
            return _error("events and devices must be lists of strings")
        unknown = set(events) - EVENT_TYPES
        if unknown:
            return _error(f"unknown event types: {sorted(unknown)}")
        batch = req.get("batch")
        batch = client.batch if batch is None else batch
        if not isinstance(batch, bool):
            return _error("batch must be true or false")
        client.batch = batch
        if action == "subscribe":
            client.events |= set(events)
            client.devices |= set(devices)
        else:
            client.events -= set(events)
            if devices != [ALL]:
                client.devices -= set(devices)
        self._interest_changed()
        if action == "subscribe" and self._until_live is not None:
            # "subscribed" promises every event from now on: not before the sources are
            # live. Bounded: a broker that is away must not hang the client.
            try:
                await asyncio.wait_for(self._until_live(), LIVE_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning(
                    "event sources not live after %.0f s; answering anyway", LIVE_TIMEOUT_SECONDS
                )
        return orjson.dumps(
            {
                "type": "subscribed",
                "events": sorted(client.events),
                "devices": sorted(client.devices),
                "batch": client.batch,
            }
        ).decode()

    def _interest_changed(self) -> None:
        if self._on_interest_change is not None:
            self._on_interest_change()


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _error(reason: str) -> str:
    return orjson.dumps({"type": "error", "error": reason}).decode()
