"""The firmware as real MicroPython processes against the platform's default stack
in secure mode (the supervised Mosquitto + SQLite, a provisioner): a device
provisions itself with the fleet secret over TLS with the broker's CA pinned, waits
as pending until an admin approves it, then streams as itself; a device pinning
another CA never connects; a broker that dies (and is restarted by its supervisor)
gets the device back with backoff; a device nobody approves hangs up and asks again
later, and learns of an approval that came meanwhile; a pairing window admits a new
device at once. And the setup portal of a device without settings answers HTTP on its
port.

Devices authenticate by provisioning with the fleet secret (the secure default)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from iotp.netutil import free_port
from iotp.simulator import node_ids
from iotp.simulator.mpy import MicroPythonFleet
from tests.firmware.fwlink import fw
from tests.firmware.mpy_support import (
    TEST_HEAP,
    mpy_fleet,
    need_micropython,
    tcp_connections,
    until,
)
from tests.integration.test_broker_acl_stack import _make_ca_and_cert
from tests.support import PROVISIONED, Stack, eventually, run_stack

FLEET = "fleet-secret-for-micropython-tests"

pytestmark = [pytest.mark.mosquitto, pytest.mark.asyncio(loop_scope="module")]


class Secure:
    def __init__(self, stack: Stack, ca: Path, wrong_ca: Path) -> None:
        self.stack = stack
        self.ca = ca
        self.wrong_ca = wrong_ca
        self.fleet: MicroPythonFleet | None = None

    @property
    def tls_url(self) -> str:
        url: str | None = getattr(self.stack.broker, "tls_url", None)
        assert url is not None
        return url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secure]:
    need_micropython()
    tmp = tmp_path_factory.mktemp("mpy-secure")
    ca, cert, key = _make_ca_and_cert(tmp)
    other = tmp / "other"
    other.mkdir()
    wrong_ca, _, _ = _make_ca_and_cert(other)
    async with run_stack(
        "embedded-sqlite",
        tmp,
        mode=PROVISIONED,
        ca_file=ca,  # the API serves HTTPS with the broker's certificate
        provisioning_secret=FLEET,
        tls_cert_file=cert,
        tls_key_file=key,
        mqtt_tls_port=free_port(),
        credentials_poll_seconds=0.2,
    ) as stack:
        yield Secure(stack, ca, wrong_ca)


async def _credential(stack: Stack, node: str) -> dict[str, Any] | None:
    creds = await stack.get("/api/credentials")
    for row in creds["data"]:
        if row["device_id"] == node:
            found: dict[str, Any] = row
            return found
    return None


async def test_provisions_over_tls_is_approved_and_streams(secure: Secure) -> None:
    stack = secure.stack
    async with mpy_fleet(
        secure.tls_url, wait=False, fleet_secret=FLEET, ca_file=secure.ca, seed=31
    ) as fleet:
        sim = fleet.devices[0]
        await until(sim, lambda: sim.status == "pending", what="pending approval", timeout=30)
        assert (await _credential(stack, sim.node_id))["status"] == "pending"  # type: ignore[index]
        r = await stack.http.post(f"/api/credentials/{sim.node_id}/approve")
        assert r.status_code == 200, r.text
        await until(sim, lambda: sim.connected, what="connected as itself", timeout=30)
        assert any("approved, connecting as" in line for line in sim.lines)

        async def stored() -> bool:
            r = await stack.http.get(f"/api/devices/{sim.node_id}/latest")
            return r.status_code == 200 and "temperature" in r.text

        await stack.wait_for(stored, timeout=20)

        # the supervised broker dies; its supervisor starts it again and the device
        # comes back by itself, with backoff
        pid = stack.broker.pid  # type: ignore[union-attr]
        assert pid is not None
        lost = sum(1 for line in sim.lines if "link lost" in line)
        os.kill(pid, signal.SIGKILL)
        killed = datetime.now(UTC)
        await until(
            sim,
            lambda: sum(1 for line in sim.lines if "link lost" in line) > lost,
            what="link lost",
            timeout=15,
        )

        async def streaming_again() -> bool:
            device = await stack.get(f"/api/devices/{sim.node_id}")
            seen = device["last_seen"]
            return seen is not None and datetime.fromisoformat(seen) > killed + timedelta(seconds=1)

        await stack.wait_for(streaming_again, timeout=60, interval=0.5)
        assert sim.exits == []  # the same process: it reconnected, it did not reset


async def test_a_pending_device_hangs_up_and_learns_of_its_approval_by_asking_again(
    secure: Secure,
) -> None:
    """Nobody approves it at once: it listens a while, then holds no broker connection
    until it asks again; approved meanwhile, the next ask tells it so."""
    stack = secure.stack
    port = urlsplit(secure.tls_url).port
    assert port is not None
    async with mpy_fleet(
        secure.tls_url, wait=False, fleet_secret=FLEET, ca_file=secure.ca, seed=34
    ) as fleet:
        sim = fleet.devices[0]
        await until(sim, lambda: sim.status == "pending", what="pending approval", timeout=30)
        assert sim.proc is not None
        pid = sim.proc.pid
        assert tcp_connections(pid, port) == 1  # listening for the approval
        listen = fw("enrol").PENDING_LISTEN_S
        await until(
            sim,
            lambda: any("still pending, asking again" in line for line in sim.lines),
            what="hung up",
            timeout=listen + 15,
        )
        await until(sim, lambda: tcp_connections(pid, port) == 0, what="no connection")
        assert not sim.connected
        # approved while it is not listening: the platform's answer goes nowhere
        r = await stack.http.post(f"/api/credentials/{sim.node_id}/approve")
        assert r.status_code == 200, r.text
        await until(sim, lambda: sim.connected, what="connected as itself", timeout=30)
        assert any("approved, connecting as" in line for line in sim.lines)
        assert sim.exits == []


async def test_a_pairing_window_admits_a_new_device_at_once(secure: Secure) -> None:
    """The admin opens a pairing window (as the Credentials page's button does); a new
    device that provisions meanwhile is approved on its first request."""
    stack = secure.stack
    r = await stack.http.put("/api/pairing", json={"minutes": 5})
    assert r.status_code == 200, r.text
    try:
        async with mpy_fleet(
            secure.tls_url, wait=False, fleet_secret=FLEET, ca_file=secure.ca, seed=35
        ) as fleet:
            sim = fleet.devices[0]
            await until(sim, lambda: sim.connected, what="connected as itself", timeout=30)
            assert not any(line == "status pending" for line in sim.lines)
            assert any("approved, connecting as" in line for line in sim.lines)
            row = await _credential(stack, sim.node_id)
            assert row is not None and row["status"] == "approved"

            async def stored() -> bool:
                r = await stack.http.get(f"/api/devices/{sim.node_id}/latest")
                return r.status_code == 200 and "temperature" in r.text

            await stack.wait_for(stored, timeout=20)
    finally:
        r = await stack.http.delete("/api/pairing")
        assert r.status_code in (200, 204), r.text


async def test_a_device_pinning_another_ca_never_connects(secure: Secure) -> None:
    async with mpy_fleet(
        secure.tls_url, wait=False, fleet_secret=FLEET, ca_file=secure.wrong_ca, seed=32
    ) as fleet:
        sim = fleet.devices[0]
        await until(
            sim,
            lambda: any("failed" in line for line in sim.lines),
            what="a failed TLS handshake",
            timeout=30,
        )
        await asyncio.sleep(2)  # bounded: a device that got through would be "ok" by now
        assert sim.status != "ok"
        assert not sim.started
        # it never got as far as asking: the platform has not heard of it
        assert await _credential(secure.stack, sim.node_id) is None


async def test_setup_portal_answers_http_on_its_port() -> None:
    need_micropython()
    port = free_port()
    # no Wi-Fi settings: the device opens its setup portal instead of connecting
    fleet = MicroPythonFleet(
        devices=1,
        broker_url="mqtt://127.0.0.1:9",
        config={"wifi_ssid": ""},
        portal_ports={0: port},
        heap=TEST_HEAP,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop=stop))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await eventually(
                lambda: http.get(f"http://127.0.0.1:{port}/"),
                timeout=20,
                interval=0.2,
                what="the setup portal answers",
                retry_on=(httpx.TransportError,),
            )
        assert r.status_code == 200
        assert "<form" in r.text
        sim = fleet.devices[0]
        assert any("setup mode" in line for line in sim.lines)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_iotp_simulate_micropython_three_devices_online(secure: Secure) -> None:
    """`iotp simulate --runtime micropython --devices 3`, provisioning as the secure
    default requires: approved as they ask, all three online and acking commands."""
    stack = secure.stack
    iotp = Path(sys.executable).parent / "iotp"
    proc = await asyncio.create_subprocess_exec(
        str(iotp),
        "simulate",
        "--runtime",
        "micropython",
        "--devices",
        "3",
        "--broker",
        secure.tls_url,
        "--ca",
        str(secure.ca),
        "--fleet-secret",
        FLEET,
        "--interval",
        "1",
        "--seed",
        "33",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    ids = node_ids(3, seed=33)
    try:

        async def approved_all() -> bool:
            done = 0
            for node in ids:
                row = await _credential(stack, node)
                if row is not None and row["status"] == "pending":
                    await stack.http.post(f"/api/credentials/{node}/approve")
                done += row is not None and row["status"] == "approved"
            return done == len(ids)

        await stack.wait_for(approved_all, timeout=60, interval=0.5)

        async def online() -> bool:
            devices = [await stack.http.get(f"/api/devices/{node}") for node in ids]
            return all(d.status_code == 200 and d.json()["status"] == "online" for d in devices)

        await stack.wait_for(online, timeout=60, interval=0.5)
        for node in ids:
            r = await stack.http.post(
                f"/api/devices/{node}/commands",
                params={"wait": "true"},
                json={"command": "ping", "params": {}},
            )
            assert r.json()["status"] == "acked", r.json()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
