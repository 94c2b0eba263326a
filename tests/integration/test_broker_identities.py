"""Identities on the platform's own Mosquitto in secure mode, tested as the attacks:
the victim device connected and streaming, the attacker a second client. Every attack
must change nothing: ingest keeps counting and the victim still acks its commands.
Devices here are provisioned (credentials issued through the API)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311

from iotp.broker.supervisor import SupervisedMosquitto
from tests.control_support import FakeDevice, command_status
from tests.support import OPEN, PROVISIONED, MqttTestClient, Stack, run_stack

FLEET = "fleet-secret-for-identity-tests"
VICTIM = "A4CF12B3C4D5"
OTHER = "B0B0B0B0B0B0"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with run_stack(
        "embedded-sqlite",
        tmp_path,
        mode=PROVISIONED,
        provisioning_secret=FLEET,
        credentials_poll_seconds=0.2,
    ) as s:
        yield s


async def issue(stack: Stack, device_id: str) -> str:
    response = await stack.http.post(f"/api/credentials/{device_id}")
    response.raise_for_status()
    secret: str = response.json()["password"]
    return secret


async def attempt(url: str, client_id: str, credentials: tuple[str, str] | None) -> int:
    """CONNECT once; the CONNACK code (0 = accepted; the connection is then closed)."""
    client = gmqtt.Client(client_id, clean_session=True)
    client.set_config({"reconnect_retries": 0})
    if credentials is not None:
        client.set_auth_credentials(*credentials)
    codes: list[int] = []
    client.on_connect = lambda c, flags, rc, props: codes.append(rc)
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    try:
        await client.connect(host, int(port), version=MQTTv311, keepalive=30)
    except Exception as exc:  # gmqtt raises on a refused CONNACK
        return int(getattr(exc, "args", [5])[-1]) if codes == [] else codes[0]
    await client.disconnect()
    return codes[0] if codes else 0


class Streaming:
    """The victim: issued credentials, telemetry every 50 ms, acks commands."""

    def __init__(self, stack: Stack, device: FakeDevice) -> None:
        self.stack = stack
        self.device = device
        self.seq = 0
        self._task = asyncio.create_task(self._stream())
        stack.cleanup.append(self.stop)

    async def _stream(self) -> None:
        while True:
            if self.device.client is not None:
                self.seq += 1
                self.device.client.publish(
                    f"devices/{VICTIM}/data", f'{{"temperature": 20, "seq": {self.seq}}}'
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def stored(self) -> int:
        stats = await self.stack.get("/api/stats")
        return int(stats["messages_stored"])

    async def still_fine(self) -> None:
        """Ingest keeps counting and a command is acked by the victim."""
        before = await self.stored()
        await self.stack.wait_for(lambda: _more(self, before), timeout=10)
        response = await self.stack.http.post(
            f"/api/devices/{VICTIM}/commands",
            json={"command": "relay", "params": {"name": "light", "state": "on"}},
        )
        assert response.status_code in (200, 201, 202), response.text
        cid = response.json()["id"]
        done = await command_status(self.stack, cid, "acked", "failed", "timed_out")
        assert done["status"] == "acked", done


async def _more(victim: Streaming, before: int) -> bool:
    return await victim.stored() > before + 5


async def connected_victim(stack: Stack) -> Streaming:
    secret = await issue(stack, VICTIM)
    device = FakeDevice(stack, VICTIM, secret=secret)

    async def up() -> bool:
        try:
            await device.start()
        except Exception:  # refused until the broker has reloaded its accounts
            return False
        return True

    await stack.wait_for(up, timeout=10, interval=0.2)
    return Streaming(stack, device)


async def test_anonymous_connect_is_refused(stack: Stack) -> None:
    victim = await connected_victim(stack)
    assert await attempt(stack.mqtt_url, "anybody", None) != 0
    assert await attempt(stack.platform_url, "anybody", None) != 0
    assert await attempt(stack.mqtt_url, VICTIM, None) != 0
    await victim.still_fine()


async def test_platform_client_ids_cannot_be_taken(stack: Stack) -> None:
    """The worker's and the API's client ids, with wrong or device credentials, on
    either listener: refused, or (a device's own login) bound to its own client id."""
    victim = await connected_victim(stack)
    other = await issue(stack, OTHER)
    worker_id = stack.settings.mqtt_client_id
    for url in (stack.mqtt_url, stack.platform_url):
        for creds in (("iotp-worker", "wrong"), ("iotp-api", "wrong"), ("provision", "wrong")):
            assert await attempt(url, worker_id, creds) != 0
    # A device logging in with the worker's client id gets its own (use_username_as_clientid).
    await stack.wait_for(lambda: _accepted(stack.mqtt_url, worker_id, (OTHER, other)))
    # Its credentials are not the platform's: the platform listener refuses them.
    assert await attempt(stack.platform_url, worker_id, (OTHER, other)) != 0
    await victim.still_fine()


async def _accepted(url: str, client_id: str, creds: tuple[str, str]) -> bool:
    return await attempt(url, client_id, creds) == 0


async def test_device_client_id_cannot_be_taken(stack: Stack) -> None:
    victim = await connected_victim(stack)
    assert await attempt(stack.mqtt_url, VICTIM, (VICTIM, "wrong-secret-0123456789")) != 0
    assert await attempt(stack.mqtt_url, VICTIM, ("somebody", "x")) != 0
    # The fleet secret lets one provision, never be the device: the provisioning
    # connection's client id is `provision`, whatever it asks for.
    assert await attempt(stack.mqtt_url, VICTIM, ("provision", FLEET)) == 0
    await asyncio.sleep(0.5)  # bounded: a takeover would have dropped the victim by now
    assert victim.device.client is not None
    assert victim.device.client.client.is_connected
    await victim.still_fine()


async def test_device_cannot_publish_as_another_or_read_everything(stack: Stack) -> None:
    victim = await connected_victim(stack)
    other_secret = await issue(stack, OTHER)
    spy: MqttTestClient | None = None

    async def spy_up() -> bool:
        nonlocal spy
        try:
            spy = await stack.device(OTHER, credentials=(OTHER, other_secret))
        except Exception:  # refused until the broker has reloaded its accounts
            return False
        return True

    await stack.wait_for(spy_up, timeout=10, interval=0.2)
    assert spy is not None
    await spy.subscribe("#")
    await spy.subscribe(f"devices/{VICTIM}/commands")
    await spy.subscribe("provision/+/request")
    spy.publish(f"devices/{VICTIM}/data", '{"temperature": -99, "seq": 999999}')
    spy.publish(f"devices/{VICTIM}/status", "offline", retain=True)
    spy.publish(f"provision/{VICTIM}/request", '{"secret": "taken-over-0123456789"}')
    await victim.still_fine()
    # Nothing of the victim's reached the spy, and the forged reading was not stored.
    seen: list[tuple[str, Any]] = []
    while not spy.messages.empty():
        seen.append(spy.messages.get_nowait())
    assert [t for t, _ in seen if VICTIM in t] == []
    latest = (await stack.http.get(f"/api/devices/{VICTIM}/latest")).json()
    assert latest["metrics"]["temperature"]["value"] == 20
    device = (await stack.http.get(f"/api/devices/{VICTIM}")).json()
    assert device["status"] == "online"
    credentials = (await stack.http.get("/api/credentials")).json()["data"]
    assert {c["device_id"]: c["status"] for c in credentials}.get(VICTIM) == "approved"


async def test_a_revoked_device_is_disconnected(stack: Stack) -> None:
    victim = await connected_victim(stack)
    client = victim.device.client
    assert client is not None
    gone = asyncio.Event()
    client.client.on_disconnect = lambda *args: gone.set()
    response = await stack.http.post(f"/api/credentials/{VICTIM}/revoke")
    assert response.status_code == 200, response.text
    await asyncio.wait_for(gone.wait(), 10)  # the 2 s target is measured in bench/
    assert await attempt(stack.mqtt_url, VICTIM, (VICTIM, "x")) != 0


async def test_mosquitto_is_restarted_when_it_dies(tmp_path: Path) -> None:
    """Killed from outside: started again, the platform reconnects, ingest resumes."""
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack:
        broker = stack.broker
        assert isinstance(broker, SupervisedMosquitto)
        first = broker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)

        async def back() -> bool:
            restarted = broker.restarts == 1 and broker.pid not in (None, first)
            return restarted and stack.worker.link.is_connected

        await stack.wait_for(back, timeout=30, interval=0.2)
        device = await stack.device("RESTART1")
        device.publish("devices/RESTART1/data", '{"temperature": 20}')

        async def stored() -> bool:
            return (await stack.http.get("/api/devices/RESTART1")).status_code == 200

        await stack.wait_for(stored, timeout=30)
