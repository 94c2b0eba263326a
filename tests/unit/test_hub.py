"""The WebSocket hub's batching: events already queued for a client go out as one frame."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from iotp.api.hub import MAX_BATCH, Client, Hub


class FakeWs:
    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(text)


def _event(i: int) -> str:
    return orjson.dumps({"type": "device_data", "device_id": "A", "ts": i, "payload": {}}).decode()


async def _run(batch: bool, count: int) -> list[Any]:
    hub = Hub(queue_size=10_000)
    ws = FakeWs()
    client = Client(ws, 10_000)  # type: ignore[arg-type]
    reply = orjson.loads(
        await hub._handle_request(
            client,
            orjson.dumps(
                {"action": "subscribe", "events": ["device_data"], "devices": ["*"], "batch": batch}
            ).decode(),
        )
    )
    assert reply["batch"] is batch
    hub.clients.add(client)
    for i in range(count):  # all queued before the sender runs, as in a burst
        hub.broadcast("device_data", "A", _event(i))
    sender = asyncio.create_task(hub._send_loop(client))
    while not client.queue.empty():
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    sender.cancel()
    return [orjson.loads(f) for f in ws.frames]


async def test_a_batching_client_gets_what_is_queued_in_one_frame_in_order() -> None:
    frames = await _run(batch=True, count=MAX_BATCH + 5)
    assert [len(f) for f in frames] == [MAX_BATCH, 5]
    assert [e["ts"] for f in frames for e in f] == list(range(MAX_BATCH + 5))


async def test_a_client_that_did_not_ask_gets_one_event_per_frame() -> None:
    frames = await _run(batch=False, count=3)
    assert [f["ts"] for f in frames] == [0, 1, 2]


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_batch_must_be_a_boolean(value: Any) -> None:
    hub = Hub(queue_size=10)
    client = Client(FakeWs(), 10)  # type: ignore[arg-type]
    request: dict[str, Any] = {"action": "subscribe", "events": ["device_data"]}
    request["batch"] = value
    reply = orjson.loads(await hub._handle_request(client, orjson.dumps(request).decode()))
    if value is None:
        assert reply["type"] == "subscribed"
        assert reply["batch"] is False
    else:
        assert reply == {"type": "error", "error": "batch must be true or false"}
