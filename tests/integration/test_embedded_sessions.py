"""The embedded broker keeps a persistent session's QoS 1 messages while its client is
away (MQTT 3.1.2.4), as Mosquitto does: device acks published while the worker
restarts reach it after the restart."""

from __future__ import annotations

import asyncio
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

from iotp.broker.embedded import EmbeddedBroker
from iotp.netutil import free_port
from tests.support import MqttTestClient


async def _client(port: int, client_id: str, *, clean: bool) -> tuple[Any, asyncio.Queue[Any]]:
    received: asyncio.Queue[Any] = asyncio.Queue()
    client = gmqtt.Client(client_id, clean_session=clean)
    client.set_config({"reconnect_retries": 0})

    def on_message(_c: Any, topic: str, payload: bytes, qos: int, _p: Any) -> int:
        received.put_nowait((topic, payload))
        return 0

    client.on_message = on_message
    await client.connect("127.0.0.1", port, version=MQTTv311)
    return client, received


async def test_offline_persistent_session_gets_its_qos1_messages_after_reconnecting() -> None:
    port = free_port()
    broker = EmbeddedBroker("127.0.0.1", port)
    await broker.start()
    try:
        worker, _ = await _client(port, "iotp-worker-test", clean=False)
        suback = asyncio.get_running_loop().create_future()
        worker.on_subscribe = lambda *_: suback.done() or suback.set_result(None)
        worker.subscribe("devices/+/ack", qos=1)
        await asyncio.wait_for(suback, 5)
        await worker.disconnect()  # the worker restarts...
        # Subscribed after the worker, to the same filter: the broker hands a message to
        # the worker's session (kept while it is away) before this observer's copy.
        observer = await MqttTestClient(broker.url).connect()
        await observer.subscribe("devices/+/ack")
        device, _ = await _client(port, "DEV000000001", clean=True)
        device.publish("devices/DEV000000001/ack", b'{"id": "c1", "status": "ok"}', qos=1)
        assert (await asyncio.wait_for(observer.messages.get(), 5))[0] == "devices/DEV000000001/ack"
        await observer.close()
        worker, received = await _client(port, "iotp-worker-test", clean=False)
        topic, payload = await asyncio.wait_for(received.get(), 5)
        assert topic == "devices/DEV000000001/ack"
        assert b'"c1"' in payload
        await worker.disconnect()
        await device.disconnect()
    finally:
        await broker.stop()
