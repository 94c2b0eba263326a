"""Provisioning can't be hijacked by another holder of the fleet secret.

The fleet secret is on every device's flash, so anyone who opened one device holds it.
The attacks, each as a second client beside a victim device that asked first:

- another secret for the victim's id while it is pending: refused (the first secret
  wins), counted, an alert is raised; the admin's pending list shows the fingerprint of
  the victim's secret, which the victim itself shows too;
- a flood of requests: rate limited per id and overall, pending requests capped, with a
  reason the device understands (ask again later);
- with auto-approval (or a pairing window), claiming the id of a device the platform
  already knows: left pending for an admin.

Devices authenticate as provisioned devices (secure mode) on the embedded broker and on
Mosquitto with the files the platform generates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.broker.provisioning import Provisioner
from iotp.db.models import Device
from iotp.metrics import render_api_metrics
from iotp.services import alerts as alert_service
from iotp.services import credentials as cred_service
from iotp.services.credentials import CredentialStatus
from tests.integration.test_broker_acl import BROKERS, FLEET, Client, Refused, SecureBroker

VICTIM_SECRET = "victim-made-this-secret-up-0001"
FLEET_IDLE: dict[str, Any] = {
    "workers": 0,
    "api_instances": 0,
    "ingest_rate": 0.0,
    "messages_received": 0,
    "messages_stored": 0,
    "rejected_by_reason": {},
}
ATTACKER_SECRET = "attacker-made-this-one-up-9999"


@pytest.fixture(params=list(BROKERS))
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SecureBroker]:
    async with BROKERS[request.param](tmp_path) as b:
        yield b


async def _provisioner(broker: SecureBroker, **settings: Any) -> Provisioner:
    provisioner = Provisioner(
        broker.settings.model_copy(update=settings), broker.engine, broker.url
    )
    await provisioner.start()
    return provisioner


async def _ask(broker: SecureBroker, device_id: str, secret: str) -> dict[str, Any]:
    """One provisioning exchange as the firmware does it: connect with the fleet secret,
    subscribe to the answer, ask, read the answer."""
    client = await broker.connect(device_id, "provision", FLEET)
    try:
        assert await client.subscribe(f"provision/{device_id}/response") in (0, 1)
        client.publish(f"provision/{device_id}/request", orjson.dumps({"secret": secret}))
        topic, payload = await client.next()
        assert topic == f"provision/{device_id}/response"
        answer: dict[str, Any] = orjson.loads(payload)
        return answer
    finally:
        await client.close()


async def _credential(broker: SecureBroker, device_id: str) -> Any:
    async with AsyncSession(broker.engine) as session:
        return await cred_service.get(session, device_id)


async def test_a_request_and_its_repeat_at_the_same_moment_are_both_answered(
    broker: SecureBroker,
) -> None:
    """A device sends its request again when it reconnects: the first and the repeat
    may be handled at once, and the repeat must not lose the race for the new row."""
    provisioner = await _provisioner(broker)
    try:
        payload = orjson.dumps({"secret": VICTIM_SECRET})
        await asyncio.gather(
            *(provisioner.handle("provision/R1/request", payload, 1, False) for _ in range(3))
        )
        assert provisioner.outcomes == {"pending": 3}
        row = await _credential(broker, "R1")
        assert row.status == CredentialStatus.PENDING
        assert row.fingerprint == cred_service.fingerprint(VICTIM_SECRET)
    finally:
        await provisioner.stop()


async def test_a_second_secret_for_a_pending_id_is_refused_counted_and_alerted(
    broker: SecureBroker,
) -> None:
    provisioner = await _provisioner(broker)
    try:
        assert await _ask(broker, "V1", VICTIM_SECRET) == {"status": "pending"}
        row = await _credential(broker, "V1")
        assert row.fingerprint == cred_service.fingerprint(VICTIM_SECRET)

        # the attack: the same id, another secret, while the victim waits for approval
        answer = await _ask(broker, "V1", ATTACKER_SECRET)
        assert answer["status"] == "rejected"
        assert "another secret" in answer["error"]
        assert provisioner.outcomes["conflict"] == 1
        row = await _credential(broker, "V1")
        assert row.status == CredentialStatus.PENDING
        assert row.fingerprint == cred_service.fingerprint(VICTIM_SECRET)
        assert row.conflicts == 1
        async with AsyncSession(broker.engine) as session:
            alert = await alert_service.open_alert(session, "provisioning:V1")
        assert alert is not None
        assert alert.device_id == "V1"
        assert cred_service.fingerprint(ATTACKER_SECRET) in alert.message
        async with AsyncSession(broker.engine) as session:
            by_status, conflicts = await cred_service.provisioning_counts(session)
        assert (by_status, conflicts) == ({"pending": 1}, 1)
        scrape = render_api_metrics(
            ws_clients=0,
            ws_dropped=0,
            mqtt_connected=True,
            fleet=FLEET_IDLE,
            by_status={},
            credentials=by_status,
            provisioning_conflicts=conflicts,
        )[0].decode()
        assert "iotp_provisioning_conflicts_total 1.0" in scrape
        assert 'iotp_device_credentials{status="pending"} 1.0' in scrape

        # the victim asking again with its own secret is still pending, not a conflict
        assert await _ask(broker, "V1", VICTIM_SECRET) == {"status": "pending"}
        assert provisioner.outcomes["conflict"] == 1

        # the admin approves (after comparing fingerprints): the victim's secret works,
        # the attacker's does not
        async with AsyncSession(broker.engine) as session:
            await cred_service.approve(session, device_id="V1")
            await session.commit()
        await broker.apply()
        victim = await broker.connect("V1", "V1", VICTIM_SECRET)
        assert await victim.subscribe("devices/V1/commands") in (0, 1)
        with pytest.raises(Refused):
            await Client(broker.url, "V1x", "V1", ATTACKER_SECRET).connect()
    finally:
        await provisioner.stop()


async def test_requests_are_rate_limited_and_pending_requests_capped(
    broker: SecureBroker,
) -> None:
    provisioner = await _provisioner(
        broker, provisioning_rate_per_id=0.01, provisioning_max_pending=2
    )
    try:
        assert await _ask(broker, "R1", VICTIM_SECRET) == {"status": "pending"}
        burst = cred_service.PROVISIONING_ID_BURST
        for _ in range(burst - 1):
            assert await _ask(broker, "R1", VICTIM_SECRET) == {"status": "pending"}
        limited = await _ask(broker, "R1", VICTIM_SECRET)
        assert limited["status"] == "rejected"
        assert "too many requests" in limited["error"]
        assert "again later" in limited["error"]
        assert provisioner.outcomes["rate_limited"] == 1

        assert await _ask(broker, "R2", VICTIM_SECRET) == {"status": "pending"}
        full = await _ask(broker, "R3", VICTIM_SECRET)
        assert full["status"] == "rejected"
        assert "pending" in full["error"]
        assert "again later" in full["error"]
        assert provisioner.outcomes["capped"] == 1
        with pytest.raises(cred_service.NotFoundError):
            await _credential(broker, "R3")
    finally:
        await provisioner.stop()


async def test_overall_rate_limit(broker: SecureBroker) -> None:
    provisioner = await _provisioner(broker, provisioning_rate=0.01)
    try:
        answers = [
            await _ask(broker, f"O{i}", VICTIM_SECRET)
            for i in range(cred_service.PROVISIONING_BURST + 1)
        ]
        assert [a["status"] for a in answers[:-1]] == ["pending"] * cred_service.PROVISIONING_BURST
        assert answers[-1]["status"] == "rejected"
        assert "again later" in answers[-1]["error"]
    finally:
        await provisioner.stop()


async def test_auto_approval_never_hands_out_a_known_devices_id(broker: SecureBroker) -> None:
    async with AsyncSession(broker.engine) as session:
        session.add(Device(id="K1", name="K1", first_seen=1.0, last_seen=1.0))
        await session.commit()
    provisioner = await _provisioner(broker, auto_approve=True)
    try:
        # a new id is approved at once (that is what auto-approval is for) ...
        assert await _ask(broker, "N1", VICTIM_SECRET) == {"status": "approved"}
        # ... the id of a device the platform knows waits for an admin
        assert await _ask(broker, "K1", ATTACKER_SECRET) == {"status": "pending"}
        assert (await _credential(broker, "K1")).status == CredentialStatus.PENDING
    finally:
        await provisioner.stop()
