"""Pure logic of the worker's RabbitMQ input: topic mapping and the cumulative ack
watermark (never past a delivery still pending). RabbitMQ itself: test_rabbitmq.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from iotp.worker.amqp_source import AmqpSource, routing_key_to_topic, topic_filter_to_binding


def test_topics_and_routing_keys() -> None:
    assert routing_key_to_topic("devices.A1.data") == "devices/A1/data"
    assert routing_key_to_topic("iotp.control.dispatch") == "iotp/control/dispatch"
    # The MQTT plugin swaps both ways: a dot in a topic level is a slash in the key.
    assert routing_key_to_topic("devices.a/b.data") == "devices/a.b/data"
    assert topic_filter_to_binding("devices/#") == "devices.#"
    assert topic_filter_to_binding("iotp/control/+") == "iotp.control.*"


@dataclass
class FakeChannel:
    acks: list[tuple[int, bool]] = field(default_factory=list)
    nacks: list[tuple[int, bool]] = field(default_factory=list)
    is_closed: bool = False

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.acks.append((tag, multiple))

    async def basic_nack(
        self, tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        self.nacks.append((tag, requeue))


@dataclass
class Delivery:
    delivery_tag: int
    routing_key: str
    redelivered: bool = False


@dataclass
class Message:
    delivery: Delivery
    body: bytes = b"{}"


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acks_are_cumulative_and_never_pass_a_pending_delivery() -> None:
    loop = asyncio.get_running_loop()
    batch: asyncio.Future[None] = loop.create_future()
    registration: asyncio.Future[None] = loop.create_future()
    results: dict[str, Any] = {"A1": batch, "NEW": registration, "A2": batch, "X": None}
    seen: list[str] = []

    def handler(topic: str, payload: bytes, qos: int, retain: bool) -> Any:
        seen.append(topic)
        return results[topic.split("/")[1]]

    source = AmqpSource("amqp://x", queue="q", bindings=[], handler=handler, prefetch=10)
    channel = FakeChannel()
    source._channel = channel  # type: ignore[assignment]
    source._generation = 1
    for tag, device in enumerate(["A1", "NEW", "A2", "X"], start=1):
        await source._on_delivery(Message(Delivery(tag, f"devices.{device}.data")))  # type: ignore[arg-type]
    assert seen == ["devices/A1/data", "devices/NEW/data", "devices/A2/data", "devices/X/data"]
    await _settle()
    assert channel.acks == []  # tag 1 is pending: nothing may be acknowledged yet

    batch.set_result(None)  # tags 1 and 3 stored; 2 (a new device) still registering
    await _settle()
    assert channel.acks == [(1, True)]

    registration.set_result(None)
    await _settle()
    assert channel.acks == [(1, True), (4, True)]  # one ack for 2, 3 and 4
    assert not source._pending


async def test_a_failed_batch_goes_back_to_the_queue() -> None:
    loop = asyncio.get_running_loop()
    batch: asyncio.Future[None] = loop.create_future()
    source = AmqpSource("amqp://x", queue="q", bindings=[], handler=lambda *a: batch, prefetch=10)
    channel = FakeChannel()
    source._channel = channel  # type: ignore[assignment]
    source._generation = 1
    for tag in (1, 2):
        await source._on_delivery(Message(Delivery(tag, "devices.A1.data")))  # type: ignore[arg-type]
    batch.set_exception(RuntimeError("database gone"))
    await _settle()
    assert channel.nacks == [(1, True), (2, True)]  # requeued, for any worker
    assert channel.acks == []  # an ack must end on an outstanding delivery
    batch2: asyncio.Future[None] = loop.create_future()
    source._handler = lambda *a: batch2
    await source._on_delivery(Message(Delivery(3, "devices.A1.data")))  # type: ignore[arg-type]
    batch2.set_result(None)
    await _settle()
    assert channel.acks == [(3, True)]  # passes the settled 1 and 2


async def test_acks_of_an_old_channel_are_dropped() -> None:
    loop = asyncio.get_running_loop()
    batch: asyncio.Future[None] = loop.create_future()
    source = AmqpSource("amqp://x", queue="q", bindings=[], handler=lambda *a: batch, prefetch=10)
    channel = FakeChannel()
    source._channel = channel  # type: ignore[assignment]
    source._generation = 1
    await source._on_delivery(Message(Delivery(1, "devices.A1.data")))  # type: ignore[arg-type]
    source._lost()  # the connection dropped: RabbitMQ requeued tag 1 already
    source._generation = 2
    source._channel = channel  # type: ignore[assignment]
    batch.set_result(None)
    await _settle()
    assert channel.acks == []
