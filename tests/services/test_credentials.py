"""Device credentials on a real database: a provisioning request is answered the same way
when the device asks again with its secret and refused (with an alert) when another
secret asks for the id; a known device's id is never approved unseen; only a pending
request can be approved; a revoked device stays refused; the brokers see only approved
devices."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import Device
from iotp.errors import ConflictError, InvalidRequestError
from iotp.services import alerts
from iotp.services import credentials as creds
from iotp.services.credentials import CredentialStatus, ProvisioningConflict, ProvisioningFull

NOW = 1_800_000_000.0
SECRET = "device-made-this-secret-0123456789"
OTHER = "someone-else-made-this-one-987654"


async def test_asking_again_with_the_same_secret_gets_the_same_answer(
    session: AsyncSession,
) -> None:
    first = await creds.request(session, device_id="ESP32-A1", secret=SECRET, auto_approve=False)
    assert first == CredentialStatus.PENDING
    await session.commit()
    again = await creds.request(session, device_id="ESP32-A1", secret=SECRET, auto_approve=True)
    assert again == CredentialStatus.PENDING  # answered as before, not approved now
    row = await creds.approve(session, device_id="ESP32-A1", now=NOW)
    await session.commit()
    assert (row.status, row.approved_at, row.fingerprint) == (
        "approved",
        NOW,
        creds.fingerprint(SECRET),
    )
    answer = await creds.request(session, device_id="ESP32-A1", secret=SECRET, auto_approve=False)
    assert answer == CredentialStatus.APPROVED
    snapshot = await creds.snapshot(session)
    assert set(snapshot.approved) == {"ESP32-A1"}


async def test_another_secret_for_a_held_id_is_refused_with_an_alert(
    session: AsyncSession,
) -> None:
    await creds.request(session, device_id="ESP32-A1", secret=SECRET, auto_approve=True)
    await session.commit()
    with pytest.raises(ProvisioningConflict) as refused:
        await creds.request(session, device_id="ESP32-A1", secret=OTHER, auto_approve=True)
    conflict = refused.value
    assert "another secret is already approved for 'ESP32-A1'" in str(conflict)
    assert (conflict.offered, conflict.held) == (
        creds.fingerprint(OTHER),
        creds.fingerprint(SECRET),
    )
    first, created = await creds.record_conflict(session, conflict, now=NOW)
    await session.commit()
    assert created
    assert first.severity == "critical"
    assert creds.fingerprint(OTHER) in first.message
    again, created = await creds.record_conflict(session, conflict, now=NOW + 5)
    await session.commit()
    assert (again.id, created) == (first.id, False)  # one open alert, repeated
    assert await creds.provisioning_counts(session) == ({"approved": 1}, 2)
    assert (await alerts.open_alert(session, creds.conflict_alert_key("ESP32-A1"))) is not None
    # The holder still gets in.
    held = await creds.request(session, device_id="ESP32-A1", secret=SECRET, auto_approve=False)
    assert held == CredentialStatus.APPROVED


async def test_a_known_devices_id_is_never_approved_unseen(session: AsyncSession) -> None:
    session.add(Device(id="ESP32-KNOWN", name="Kitchen", status="offline", first_seen=NOW))
    await session.commit()
    status = await creds.request(session, device_id="ESP32-KNOWN", secret=SECRET, auto_approve=True)
    assert status == CredentialStatus.PENDING
    fresh = await creds.request(session, device_id="ESP32-NEW", secret=OTHER, auto_approve=True)
    assert fresh == CredentialStatus.APPROVED


async def test_only_a_pending_request_is_approved(session: AsyncSession) -> None:
    await creds.issue(session, device_id="ESP32-ISSUED", now=NOW)
    await session.commit()
    with pytest.raises(ConflictError, match="'ESP32-ISSUED' is approved, not pending"):
        await creds.approve(session, device_id="ESP32-ISSUED")
    await session.rollback()


async def test_a_revoked_device_stays_refused_until_issued_again(session: AsyncSession) -> None:
    _, first = await creds.issue(session, device_id="ESP32-R1", now=NOW)
    await creds.revoke(session, device_id="ESP32-R1", now=NOW + 1)
    await session.commit()
    assert "ESP32-R1" not in (await creds.snapshot(session)).approved
    for secret in (first, SECRET):
        status = await creds.request(
            session, device_id="ESP32-R1", secret=secret, auto_approve=True
        )
        assert status == CredentialStatus.REVOKED
    with pytest.raises(ConflictError):
        await creds.approve(session, device_id="ESP32-R1")
    await session.rollback()
    row, second = await creds.issue(session, device_id="ESP32-R1", now=NOW + 2)
    await session.commit()
    assert second != first
    assert (row.status, row.revoked_at) == ("approved", None)
    assert "ESP32-R1" in (await creds.snapshot(session)).approved


async def test_pending_requests_are_bounded(session: AsyncSession) -> None:
    for i in range(2):
        await creds.request(
            session, device_id=f"ESP32-P{i}", secret=SECRET, auto_approve=False, max_pending=2
        )
    await session.commit()
    with pytest.raises(ProvisioningFull, match="2 requests are already pending approval"):
        await creds.request(
            session, device_id="ESP32-P9", secret=SECRET, auto_approve=False, max_pending=2
        )
    await session.rollback()
    assert [c.device_id for c in await creds.list_credentials(session)] == [
        "ESP32-P0",
        "ESP32-P1",
    ]


@pytest.mark.parametrize(
    ("device_id", "secret", "reason"),
    [
        ("provision", SECRET, "'provision' is reserved"),
        ("iotp", SECRET, "'iotp' is reserved"),
        ("has space", SECRET, "device id must match"),
        ("ESP32-A1", "short", "secret must be 16..256 characters"),
        ("ESP32-A1", "x" * 257, "secret must be 16..256 characters"),
    ],
)
async def test_a_request_that_cannot_be_is_refused_with_the_reason(
    session: AsyncSession, device_id: str, secret: str, reason: str
) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        await creds.request(session, device_id=device_id, secret=secret, auto_approve=True)
    await session.rollback()
    assert await creds.list_credentials(session) == []
