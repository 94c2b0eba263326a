"""The amqtt fallback broker authenticates a CONNECT before it touches any session.

amqtt 0.12 deletes (clean session) or takes over (persistent session) the session of a
client id before it asks the auth plugins, so one refused CONNECT with the worker's client
id stopped all ingest, and one with a device's id cut the device off. The attack, on the
amqtt stack in secure mode: the worker and a provisioned device are connected and busy;
an attacker connects with the worker's client id, then with the device's, with wrong
passwords, clean session and not. Ingest keeps counting and the device still acks its
commands. And a PUBLISH larger than the broker's limit is refused before it is read.

The device authenticates as a provisioned device (credentials issued over the API).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gmqtt
import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311

from iotp.protocol.provisioning import PROVISION_USER
from iotp.settings import DEFAULT_MAX_PACKET_BYTES as MAX_PACKET_BYTES
from tests.integration.test_broker_acl import FLEET, Client
from tests.support import AMQTT_KIND, PROVISIONED, Stack, run_stack

DEVICE = "VICTIM000001"


class Device:
    """A provisioned device: streams data and acks every command it receives."""

    def __init__(self, url: str, password: str) -> None:
        self.client = Client(url, DEVICE, DEVICE, password)
        self.acked: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        await self.client.connect()
        assert await self.client.subscribe(f"devices/{DEVICE}/commands") in (0, 1)
        seq = 0
        while not stop.is_set():
            seq += 1
            self.client.publish(f"devices/{DEVICE}/data", orjson.dumps({"t": 20.0, "seq": seq}))
            with contextlib.suppress(TimeoutError):
                _topic, payload = await self.client.next(0.1)
                command = orjson.loads(payload)
                ack = {"id": command["id"], "status": "ok"}
                self.client.publish(f"devices/{DEVICE}/ack", orjson.dumps(ack))
                self.acked.append(command["id"])


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with run_stack(AMQTT_KIND, tmp_path, mode=PROVISIONED, provisioning_secret=FLEET) as s:
        yield s


async def _stored(stack: Stack) -> int:
    return stack.worker.ingestor.counters.stored


async def _keeps_counting(stack: Stack) -> None:
    before = await _stored(stack)
    await stack.wait_for(lambda: _more(stack, before), timeout=10)


async def _more(stack: Stack, before: int) -> bool:
    return await _stored(stack) > before + 3


async def _command_acked(stack: Stack, device: Device) -> None:
    r = await stack.http.post(
        f"/api/devices/{DEVICE}/commands", json={"command": "ping"}, params={"wait": "true"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "acked", r.json()
    assert r.json()["id"] in device.acked


async def _attack(url: str, client_id: str, username: str, password: str, clean: bool) -> None:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    attacker = gmqtt.Client(client_id, clean_session=clean)
    attacker.set_config({"reconnect_retries": 0, "reconnect_delay": 3600})
    attacker.set_auth_credentials(username, password)
    try:
        await asyncio.wait_for(attacker.connect(host, int(port), version=MQTTv311), 5)
    except (gmqtt.mqtt.handler.MQTTConnectError, OSError, TimeoutError):
        return  # refused
    let_in = attacker.is_connected
    with contextlib.suppress(Exception):
        await attacker.disconnect()
    assert not let_in, f"{username!r} was let in as {client_id!r}"


async def test_refused_connects_with_taken_client_ids_change_nothing(stack: Stack) -> None:
    issued = (await stack.http.post(f"/api/credentials/{DEVICE}")).json()
    device = Device(stack.mqtt_url, issued["password"])
    stop = asyncio.Event()
    running = asyncio.create_task(device.run(stop))
    try:
        await _keeps_counting(stack)
        await _command_acked(stack, device)
        worker_id = stack.settings.mqtt_client_id
        attacks: list[tuple[str, str, str]] = [
            (worker_id, stack.settings.mqtt_service_account("worker"), "wrong-password"),
            (worker_id, "anyone", "wrong-password"),
            (DEVICE, DEVICE, "wrong-password"),
            (DEVICE, PROVISION_USER, FLEET),  # the fleet secret never takes an approved id
            (DEVICE, PROVISION_USER, "wrong-fleet-secret"),
        ]
        for client_id, username, password in attacks:
            for clean in (True, False):
                await _attack(stack.mqtt_url, client_id, username, password, clean)
                await _keeps_counting(stack)
        assert stack.worker.link.is_connected
        assert not device.client.disconnected.is_set()
        await _command_acked(stack, device)
    finally:
        stop.set()
        await running


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def test_a_publish_over_the_limit_is_refused_before_it_is_read(stack: Stack) -> None:
    """An authenticated device announces a PUBLISH of 256 MB: the broker drops the
    connection at the header instead of reading it into memory; ingest goes on."""
    issued = (await stack.http.post(f"/api/credentials/{DEVICE}")).json()
    device = Device(stack.mqtt_url, issued["password"])
    stop = asyncio.Event()
    running = asyncio.create_task(device.run(stop))
    try:
        await _keeps_counting(stack)
        rogue = await stack.http.post("/api/credentials/ROGUE0000001")
        host, port = stack.mqtt_url.split("://", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(_connect_packet("ROGUE0000001", "ROGUE0000001", rogue.json()["password"]))
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), 5)
        assert connack == b"\x20\x02\x00\x00"
        topic = b"devices/ROGUE0000001/data"
        size = 256 * 1024 * 1024 - 1
        assert size > MAX_PACKET_BYTES
        writer.write(b"\x30" + _remaining_length(size) + len(topic).to_bytes(2, "big") + topic)
        writer.write(b"x" * 65536)
        await writer.drain()
        # the broker closes the connection: EOF (or a reset) instead of reading 256 MB
        closed: Any = await asyncio.wait_for(_eof(reader), 5)
        assert closed is True
        writer.close()
        await _keeps_counting(stack)
        await _command_acked(stack, device)
    finally:
        stop.set()
        await running


async def _eof(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionResetError, OSError):
        while await reader.read(65536):
            pass
    return True


def _connect_packet(client_id: str, username: str, password: str) -> bytes:
    def s(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    variable = s("MQTT") + bytes([4, 0b11000010]) + (30).to_bytes(2, "big")
    payload = s(client_id) + s(username) + s(password)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


async def test_a_new_client_gets_only_its_own_subscriptions_retained(stack: Stack) -> None:
    """The attack: a second device's account connects (clean, then persistent) while the
    victim's retained info and presence sit on the broker. amqtt replayed at every
    CONNECT the retained messages of every filter any client had subscribed to (the
    worker's ``devices/+/info``), past the ACL. It gets its own command, nothing else;
    ingest keeps counting and the victim still acks."""
    issued = (await stack.http.post(f"/api/credentials/{DEVICE}")).json()
    device = Device(stack.mqtt_url, issued["password"])
    stop = asyncio.Event()
    running = asyncio.create_task(device.run(stop))
    attacker_id = "ATTACKER0001"
    secret = (await stack.http.post(f"/api/credentials/{attacker_id}")).json()["password"]
    try:
        await _keeps_counting(stack)
        info = orjson.dumps({"protocol": 1, "type": "sensor", "name": "victim", "ssid": "secret"})
        device.client.client.publish(f"devices/{DEVICE}/info", info, qos=1, retain=True)
        device.client.client.publish(f"devices/{DEVICE}/status", b"online", qos=1, retain=True)

        async def info_seen() -> bool:
            r = await stack.http.get(f"/api/devices/{DEVICE}")
            return r.status_code == 200 and r.json()["metadata"].get("ssid") == "secret"

        await stack.wait_for(info_seen)
        for clean in (True, False, False):  # the second persistent login replays its session
            attacker = Client(stack.mqtt_url, attacker_id, attacker_id, secret, clean=clean)
            await stack.wait_for(lambda a=attacker: _connected(a), timeout=15, interval=0.2)
            try:
                assert await attacker.subscribe(f"devices/{attacker_id}/commands") in (0, 1)
                attacker.publish(f"devices/{attacker_id}/data", orjson.dumps({"t": 1.0}))
                await stack.wait_for(lambda: _registered(stack, attacker_id))
                # Its own command ends what the broker hands it first.
                r = await stack.http.post(
                    f"/api/devices/{attacker_id}/commands", json={"command": "ping"}
                )
                assert r.status_code == 201, r.text
                received = []
                while True:
                    topic, _payload = await attacker.next(10)
                    received.append(topic)
                    if topic == f"devices/{attacker_id}/commands":
                        break
                assert received == [f"devices/{attacker_id}/commands"], received
            finally:
                await attacker.close()
            await _keeps_counting(stack)
        await _command_acked(stack, device)
    finally:
        stop.set()
        await running


async def _registered(stack: Stack, device_id: str) -> bool:
    return (await stack.http.get(f"/api/devices/{device_id}")).status_code == 200


async def _connected(client: Client) -> bool:
    try:
        await client.connect()
    except Exception:  # refused until the broker has read the new credentials
        return False
    return True
