"""Devices over MQTTS with the broker's CA pinned (the firmware's mqtt_ca, the
simulator's --ca): provisioning and data over TLS work; a device pinning another CA
never gets to log in; and provisioning against Mosquitto with the generated
password and ACL files."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from iotp.netutil import free_port
from iotp.runtime import Platform
from iotp.simulator import Fleet
from tests.integration.test_broker_acl import FLEET, mosquitto
from tests.integration.test_broker_acl_stack import _make_ca_and_cert
from tests.integration.test_provisioning import (
    _quick_retries,  # noqa: F401 - the autouse fixture
    has_data,
    mode,
    secure_stack,
)
from tests.support import eventually


async def test_mqtts_with_pinned_ca_provisions_and_streams(tmp_path: Path) -> None:
    ca, cert, key = _make_ca_and_cert(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _, _ = _make_ca_and_cert(other)
    async with secure_stack(
        tmp_path,
        auto_approve=True,
        tls_cert_file=cert,
        tls_key_file=key,
        mqtt_tls_port=free_port(),
    ) as stack:
        tls_url = stack.broker.tls_url
        assert tls_url is not None
        fleet = stack.fleet(url=tls_url, ca_file=ca, fleet_secret=FLEET)
        sim = fleet.devices[0]
        await eventually(lambda: mode(sim) == "own" and sim.connected, what="provisioned over TLS")
        await eventually(lambda: has_data(stack, sim.node_id), what="data over TLS stored")

        # Another fleet pins a CA that did not sign the broker's certificate: the TLS
        # handshake fails, so it never gets as far as logging in.
        refused = stack.refused
        strangers = stack.fleet(url=tls_url, ca_file=wrong_ca, fleet_secret=FLEET, seed=8)
        stranger = strangers.devices[0]

        def failed_handshake() -> bool:
            link = stranger.device.prov_link if stranger.device is not None else None
            return link is not None and "CERTIFICATE_VERIFY_FAILED" in (link.last_error or "")

        await eventually(failed_handshake, what="certificate refused")
        await asyncio.sleep(1)  # bounded: a login that got through would show by now
        assert not stranger.connected
        assert mode(stranger) == "request"  # a TLS failure is not a refusal: it retries
        assert stack.refused == refused
        creds = await stack.get("/api/credentials")
        assert [c["device_id"] for c in creds["data"]] == [sim.node_id]


async def test_provisioning_and_revocation_on_mosquitto(tmp_path: Path) -> None:
    """Mosquitto with the files `iotp mosquitto sync` writes: it takes the fleet secret
    for any client id, so a revoked device hears `revoked` from the platform itself."""
    async with (
        mosquitto(tmp_path, auto_approve=True, batch_max_delay_ms=20) as broker,
        # The worker and the provisioner, as `iotp worker` runs them on this broker.
        Platform(broker.settings, broker=None, mqtt_url=broker.url, api_port=None) as platform,
    ):
        worker = platform.worker

        async def keep_files_in_sync() -> None:  # what `iotp mosquitto sync` does
            while True:
                await broker.apply()
                await asyncio.sleep(0.3)  # its polling period

        syncer = asyncio.create_task(keep_files_in_sync())
        fleet = Fleet(
            devices=1,
            broker_url=broker.url,
            interval=0.5,
            seed=9,
            connect_rate=100,
            gas_events_per_hour=0,
            fleet_secret=FLEET,
        )
        stop = asyncio.Event()
        run = asyncio.create_task(fleet.run(stop=stop))
        sim = fleet.devices[0]
        try:
            await eventually(lambda: mode(sim) == "own" and sim.connected, 30, "approved")
            await eventually(lambda: worker.ingestor.counters.stored >= 2, what="data stored")
            assert sim.node_id in worker.ingestor.known

            await broker.revoke(sim.node_id)
            await eventually(lambda: mode(sim) == "stopped", 40, "stopped")
            assert "revoked by the platform" in sim.device.creds.reason
            assert not sim.connected
        finally:
            stop.set()
            await asyncio.wait_for(run, 20)
            syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncer
