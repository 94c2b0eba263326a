"""The firmware's MQTT client against real brokers (amqtt and Mosquitto)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.firmware.fwlink import BrokerUnderTest, TcpProxy, fw, next_message, wait_until

STATUS = "devices/LINK01/status"
COMMANDS = "devices/LINK01/commands"


def make_client(port: int, **kwargs: Any) -> Any:
    mqtt = fw("mqtt")
    backoff = fw("backoff").Backoff(base=0.1, cap=0.4, jitter=0.0)
    client = mqtt.MQTTClient(
        "LINK01",
        "127.0.0.1",
        port,
        keepalive=10,
        will=(STATUS, b"offline", 1, True),
        backoff=backoff,
        ack_timeout=30,
        **kwargs,
    )
    client.on_connect = lambda: client.publish(STATUS, b"online", 1, True)
    return client


async def test_connect_birth_and_commands(broker: BrokerUnderTest) -> None:
    observer = await broker.observer()
    received: list[tuple[str, bytes]] = []
    client = make_client(broker.port, on_message=lambda t, p: received.append((t, p)))
    client.subscribe(COMMANDS, 1)
    await observer.subscribe(STATUS)
    task = asyncio.create_task(client.run())
    try:
        # The client sent its SUBSCRIBE before this birth message on the same connection,
        # and a broker handles one connection's packets in order: it is subscribed now.
        assert await next_message(observer, STATUS) == b"online"
        observer.publish(COMMANDS, b'{"id": "1"}', qos=1)
        await wait_until(lambda: received)
        assert received == [(COMMANDS, b'{"id": "1"}')]
        # QoS 0 and QoS 1 publishes both arrive
        await observer.subscribe("devices/LINK01/data")
        client.publish("devices/LINK01/data", b"q0", 0)
        client.publish("devices/LINK01/data", b"q1", 1)
        assert await next_message(observer, "devices/LINK01/data") == b"q0"
        assert await next_message(observer, "devices/LINK01/data") == b"q1"
        await wait_until(lambda: client.unacked() == 0)
    finally:
        await client.close()
        await task
        await observer.close()


async def test_last_will_on_killed_connection(broker: BrokerUnderTest) -> None:
    observer = await broker.observer()
    await observer.subscribe(STATUS)
    client = make_client(broker.port)
    task = asyncio.create_task(client.run())
    try:
        assert await next_message(observer, STATUS) == b"online"
        client.kill()
        assert await next_message(observer, STATUS) == b"offline"
        # and it comes back by itself
        assert await next_message(observer, STATUS) == b"online"
    finally:
        await client.close()
        await task
        await observer.close()


async def test_qos1_retransmitted_after_dropped_connection(broker: BrokerUnderTest) -> None:
    proxy = await TcpProxy(broker.port).start()
    observer = await broker.observer()
    await observer.subscribe("devices/LINK01/data")
    client = make_client(proxy.port)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.up.wait(), 5)
        await wait_until(lambda: client.unacked() == 0)  # the birth message's PUBACK
        # the broker's PUBACK never reaches the device
        proxy.blackhole = True
        client.publish("devices/LINK01/data", b"first", 1)
        assert await next_message(observer, "devices/LINK01/data") == b"first"
        await asyncio.sleep(0.2)  # bounded: a PUBACK that got through would be here by now
        assert client.unacked() == 1
        proxy.refuse = True
        proxy.cut()
        await wait_until(lambda: not client.connected)
        # published while the link is down: kept, never blocks the caller
        assert client.publish("devices/LINK01/data", b"second", 1)
        proxy.blackhole = False
        proxy.refuse = False
        await wait_until(lambda: client.unacked() == 0, timeout=10)
        got = [await next_message(observer, "devices/LINK01/data") for _ in range(2)]
        # the unacknowledged message is sent again (at least once), before the new one
        assert got == [b"first", b"second"]
        assert client.connects >= 2
    finally:
        await client.close()
        await task
        await proxy.stop()
        await observer.close()


async def test_reconnect_with_backoff(broker: BrokerUnderTest) -> None:
    proxy = await TcpProxy(broker.port).start()
    proxy.refuse = True
    client = make_client(proxy.port)
    task = asyncio.create_task(client.run())
    try:
        await wait_until(lambda: proxy.accepted >= 4, timeout=5)
        assert not client.connected
        assert client.backoff.failures >= 3
        assert client.backoff.ceiling() == pytest.approx(0.4)  # capped
        proxy.refuse = False
        await asyncio.wait_for(client.up.wait(), 5)
        assert client.backoff.failures == 0
    finally:
        await client.close()
        await task
        await proxy.stop()


async def test_publish_never_blocks_while_broker_is_unreachable() -> None:
    client = make_client(9, max_queue=3)  # nothing listens on port 9
    task = asyncio.create_task(client.run())
    try:
        for i in range(5):
            client.publish("devices/LINK01/data", str(i).encode(), 1)
        assert not client.publish("devices/LINK01/data", b"q0", 0)
        assert [p for _, p, _ in client.pending] == [b"2", b"3", b"4"]
        assert client.dropped == 2
    finally:
        await client.close()
        await task
