"""The device side of secure-mode provisioning, end to end: the real firmware (through
the simulator) against a secure stack (embedded broker with its auth/ACL plugins, the
provisioner, the worker, the API). A device provisions itself with the fleet secret,
waits as pending, is approved over the API, stores its credentials, reconnects as itself
and streams data that is stored; a wrong fleet secret is refused; a revoked device is
disconnected and its firmware stops trying; a restart reconnects as itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from iotp.broker.embedded import EmbeddedBroker
from iotp.services import credentials as cred_service
from iotp.settings import Settings
from iotp.simulator import Fleet, firmware
from iotp.simulator.fleet import SimDevice
from iotp.worker.service import Worker
from tests.integration.test_broker_acl import FLEET
from tests.support import AMQTT_KIND, PROVISIONED, eventually, run_stack


@dataclass
class SecureStack:
    settings: Settings
    broker: EmbeddedBroker
    worker: Worker
    http: httpx.AsyncClient
    fleets: list[tuple[Fleet, asyncio.Event, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def refused(self) -> int:
        assert self.broker.authority is not None
        return self.broker.authority.refused

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    async def post(self, path: str) -> Any:
        r = await self.http.post(path)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def fleet(self, *, url: str | None = None, devices: int = 1, **kwargs: Any) -> Fleet:
        """Starts simulated devices (the real firmware); stopped when the stack ends."""
        kwargs.setdefault("seed", 7)
        fleet = Fleet(
            devices=devices,
            broker_url=url or self.broker.url,
            interval=0.5,
            connect_rate=100,
            gas_events_per_hour=0,
            **kwargs,
        )
        stop = asyncio.Event()
        self.fleets.append((fleet, stop, asyncio.create_task(fleet.run(stop=stop))))
        return fleet

    async def stop_fleet(self, fleet: Fleet) -> None:
        for entry in list(self.fleets):
            if entry[0] is fleet:
                entry[1].set()
                await asyncio.wait_for(entry[2], 20)
                self.fleets.remove(entry)


@contextlib.asynccontextmanager
async def secure_stack(tmp_path: Path, **extra: Any) -> AsyncIterator[SecureStack]:
    """Broker + provisioner + worker + API in secure mode, as `iotp serve --secure`, on
    the amqtt broker (its credential and topic ACL plugins)."""
    cert = extra.get("tls_cert_file")
    async with run_stack(
        AMQTT_KIND,
        tmp_path,
        mode=PROVISIONED,
        # the CA beside the certificate signed it (test_broker_acl_stack._make_ca_and_cert)
        ca_file=cert.parent / "ca.crt" if cert is not None else None,
        secret_key="s" * 48,
        provisioning_secret=FLEET,
        credentials_poll_seconds=0.2,
        **extra,
    ) as base:
        assert isinstance(base.broker, EmbeddedBroker)
        stack = SecureStack(base.settings, base.broker, base.worker, base.http)
        try:
            yield stack
        finally:
            for fleet, stop, task in stack.fleets:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 20)
                del fleet


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter pauses between refused logins than on a real device (1 s, 2 s, ...)."""
    monkeypatch.setattr(firmware.module("link"), "REFUSAL_BACKOFF_BASE_S", 0.1)


def mode(sim: SimDevice) -> str | None:
    return sim.credential_mode


async def has_data(stack: SecureStack, device_id: str) -> bool:
    r = await stack.http.get(f"/api/devices/{device_id}/latest")
    return r.status_code == 200 and "temperature" in r.json().get("metrics", {})


async def test_device_provisions_waits_is_approved_and_streams(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="iotp.simulator")
    state = tmp_path / "sim-state"
    async with secure_stack(tmp_path) as stack:
        fleet = stack.fleet(fleet_secret=FLEET, state_dir=state)
        sim = fleet.devices[0]
        node = sim.node_id

        async def pending() -> bool:
            body = await stack.get("/api/credentials", status="pending")
            return [c["device_id"] for c in body["data"]] == [node]

        await eventually(pending, what="pending in the API")
        await eventually(lambda: mode(sim) == "pending", what="firmware pending")
        assert sim.hal.status == "pending"
        # while it waits the device keeps measuring (queued, not sent: no account yet)
        seq = sim.device.seq
        await eventually(lambda: sim.device.seq > seq + 1, what="measuring while pending")
        assert not sim.connected
        assert stack.worker.ingestor.known == set()
        stored = json.loads((state / f"{node}.json").read_text())
        assert len(stored["provision_secret"]) >= 16  # kept across a restart
        assert stored["mqtt_user"] == ""
        # the device shows the fingerprint the admin sees beside its request
        shown = cred_service.fingerprint(stored["provision_secret"])
        assert f"fingerprint {shown}" in caplog.text
        assert (await stack.get(f"/api/credentials/{node}"))["fingerprint"] == shown

        await stack.post(f"/api/credentials/{node}/approve")
        await eventually(lambda: mode(sim) == "own" and sim.connected, what="connected as itself")
        assert sim.hal.status == "ok"
        stored = json.loads((state / f"{node}.json").read_text())
        assert stored == {
            "mqtt_user": node,
            "mqtt_password": stored["mqtt_password"],
            "provision_secret": "",
        }
        cfg = json.loads(sim.hal.files["config.json"])
        assert cfg["mqtt_user"] == node
        assert cfg["mqtt_password"] == stored["mqtt_password"]
        await eventually(lambda: has_data(stack, node), what="data stored")
        device = await stack.get(f"/api/devices/{node}")
        assert device["status"] == "online"
        creds = await stack.get(f"/api/credentials/{node}")
        assert creds["status"] == "approved"

        # A restart of the simulator: the device comes back as itself, no provisioning.
        await stack.stop_fleet(fleet)
        again = stack.fleet(fleet_secret=FLEET, state_dir=state)
        sim2 = again.devices[0]
        await eventually(lambda: sim2.connected, what="reconnected after restart")
        assert mode(sim2) == "own"
        assert "provisioning" not in sim2.hal.statuses
        seq = sim2.device.seq
        await eventually(lambda: sim2.device.seq > seq + 2)
        assert (await stack.get(f"/api/devices/{node}"))["status"] == "online"


async def test_wrong_fleet_secret_is_refused_and_the_device_stops(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        fleet = stack.fleet(fleet_secret="not-the-fleet-secret-0000")
        sim = fleet.devices[0]
        await eventually(lambda: mode(sim) == "stopped", timeout=30, what="stopped")
        assert "fleet secret" in sim.device.creds.reason
        assert sim.hal.status == "stopped"
        assert stack.refused >= 1
        assert (await stack.get("/api/credentials"))["count"] == 0
        # it stopped trying, and keeps working offline
        refused = stack.refused
        seq = sim.device.seq
        await asyncio.sleep(2.5)  # bounded: another attempt would have come by now
        assert stack.refused == refused
        assert sim.device.seq > seq
        assert fleet.stats()["stopped"] == 1


async def test_revoked_device_is_disconnected_and_stops_trying(tmp_path: Path) -> None:
    async with secure_stack(tmp_path, auto_approve=True) as stack:
        fleet = stack.fleet(fleet_secret=FLEET)
        sim = fleet.devices[0]
        node = sim.node_id
        await eventually(lambda: mode(sim) == "own" and sim.connected, what="auto-approved")
        await eventually(lambda: has_data(stack, node), what="data stored")

        await stack.post(f"/api/credentials/{node}/revoke")
        await eventually(lambda: not sim.connected, timeout=5, what="disconnected")
        await eventually(lambda: mode(sim) == "stopped", timeout=40, what="stopped")
        reason = sim.device.creds.reason
        assert "refused" in reason, reason
        refused = stack.refused
        await asyncio.sleep(3)  # bounded: another attempt would have come by now
        assert stack.refused == refused  # no more attempts
        assert not sim.connected
        assert (await stack.get(f"/api/credentials/{node}"))["status"] == "revoked"


async def test_issued_credentials_and_a_deleted_device_provisions_again(tmp_path: Path) -> None:
    """Credentials issued by an admin (the simulator's --credentials); after the
    platform forgets them (DELETE), the device asks again with the same secret. Even
    with auto-approval a known device's id waits for an admin: it is not handed to
    whoever asks first."""
    async with secure_stack(tmp_path, auto_approve=True) as stack:
        node = Fleet(devices=1, broker_url=stack.broker.url, seed=7).devices[0].node_id
        issued = await stack.post(f"/api/credentials/{node}")
        fleet = stack.fleet(credentials={node: issued["password"]}, fleet_secret=FLEET)
        sim = fleet.devices[0]
        await eventually(lambda: sim.connected, what="connected with issued credentials")
        assert mode(sim) == "own"
        assert "provisioning" not in sim.hal.statuses
        await eventually(lambda: has_data(stack, node), what="data stored")

        r = await stack.http.delete(f"/api/credentials/{node}")
        assert r.status_code == 204
        # the broker drops it; its own login is refused; it provisions with its secret
        await eventually(lambda: "provisioning" in sim.hal.statuses, timeout=30, what="asks again")
        await eventually(lambda: mode(sim) == "pending", timeout=30, what="pending")
        credential = await stack.get(f"/api/credentials/{node}")
        assert credential["status"] == "pending"
        assert credential["fingerprint"] == cred_service.fingerprint(issued["password"])
        await stack.post(f"/api/credentials/{node}/approve")
        await eventually(lambda: mode(sim) == "own" and sim.connected, timeout=30, what="back")
        assert json.loads(sim.hal.files["config.json"])["mqtt_password"] == issued["password"]
        assert (await stack.get(f"/api/credentials/{node}"))["status"] == "approved"
