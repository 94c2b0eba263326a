"""Device MQTT credentials: provisioning requests, approval, rotation, revocation.

A device's MQTT username is its node id. Two ways to get a secret:

- issued: an admin calls ``issue`` (API: POST /api/credentials/{id}) and flashes the
  secret shown once into the device;
- provisioned: an unknown device connects with the fleet provisioning secret and asks
  with a secret it generated itself (``request``); it is *pending* until an admin
  approves it (or at once with auto-approval). The secret never travels back, so
  another holder of the fleet secret cannot pick it up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import DeviceCredential
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.services.auth import generate_secret, hash_mqtt_secret, verify_mqtt_secret
from iotp.services.errors import InvalidRequestError, NotFoundError

MIN_DEVICE_SECRET_LENGTH = 16
# MQTT usernames that are never device ids: provisioning and the platform's services.
RESERVED_USERNAMES = frozenset({"provision", "iotp"})
MAX_DEVICE_SECRET_LENGTH = 256


class CredentialStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REVOKED = "revoked"


def _check_id(device_id: str) -> None:
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        raise InvalidRequestError(f"device id must match {DEVICE_ID_RE.pattern}")
    if device_id in RESERVED_USERNAMES:
        raise InvalidRequestError(f"{device_id!r} is reserved")


async def get(session: AsyncSession, device_id: str) -> DeviceCredential:
    row = await session.get(DeviceCredential, device_id)
    if row is None:
        raise NotFoundError("device credentials", device_id)
    return row


async def list_credentials(
    session: AsyncSession, *, status: CredentialStatus | None = None
) -> list[DeviceCredential]:
    query = select(DeviceCredential).order_by(DeviceCredential.device_id)
    if status is not None:
        query = query.where(DeviceCredential.status == status.value)
    return list((await session.scalars(query)).all())


async def issue(
    session: AsyncSession, *, device_id: str, now: float | None = None
) -> tuple[DeviceCredential, str]:
    """Create or rotate: a new secret (returned once), the old one stops working."""
    _check_id(device_id)
    now = time.time() if now is None else now
    secret = generate_secret()
    row = await session.get(DeviceCredential, device_id)
    if row is None:
        row = DeviceCredential(device_id=device_id, updated_at=now)
        session.add(row)
    row.status = CredentialStatus.APPROVED.value
    row.secret_hash = hash_mqtt_secret(secret)
    row.approved_at = now
    row.revoked_at = None
    row.updated_at = now
    await session.flush()
    return row, secret


async def request(
    session: AsyncSession,
    *,
    device_id: str,
    secret: str,
    auto_approve: bool,
    now: float | None = None,
) -> CredentialStatus:
    """A provisioning request (the device proved it holds the fleet secret)."""
    _check_id(device_id)
    if not MIN_DEVICE_SECRET_LENGTH <= len(secret) <= MAX_DEVICE_SECRET_LENGTH:
        raise InvalidRequestError(
            f"secret must be {MIN_DEVICE_SECRET_LENGTH}..{MAX_DEVICE_SECRET_LENGTH} characters"
        )
    now = time.time() if now is None else now
    row = await session.get(DeviceCredential, device_id)
    if row is not None and row.status == CredentialStatus.REVOKED.value:
        return CredentialStatus.REVOKED
    if row is not None and row.status == CredentialStatus.APPROVED.value:
        # A device asking again with its current secret (it missed the answer) is told
        # so; nobody can replace an approved device's secret with the fleet secret.
        if verify_mqtt_secret(secret, row.secret_hash):
            return CredentialStatus.APPROVED
        raise InvalidRequestError(f"device {device_id!r} already has credentials")
    if row is None:
        row = DeviceCredential(device_id=device_id, updated_at=now)
        session.add(row)
    row.secret_hash = hash_mqtt_secret(secret)
    row.requested_at = now
    row.updated_at = now
    row.status = (CredentialStatus.APPROVED if auto_approve else CredentialStatus.PENDING).value
    if auto_approve:
        row.approved_at = now
    await session.flush()
    return CredentialStatus(row.status)


async def approve(
    session: AsyncSession, *, device_id: str, now: float | None = None
) -> DeviceCredential:
    row = await get(session, device_id)
    if row.status != CredentialStatus.PENDING.value:
        raise InvalidRequestError(f"device {device_id!r} is {row.status}, not pending")
    now = time.time() if now is None else now
    row.status = CredentialStatus.APPROVED.value
    row.approved_at = now
    row.updated_at = now
    await session.flush()
    return row


async def revoke(
    session: AsyncSession, *, device_id: str, now: float | None = None
) -> DeviceCredential:
    """The device is disconnected by the brokers within credentials_poll_seconds and
    refused from then on (also for provisioning), until an admin issues new ones."""
    _check_id(device_id)
    now = time.time() if now is None else now
    row = await session.get(DeviceCredential, device_id)
    if row is None:
        row = DeviceCredential(device_id=device_id, updated_at=now)
        session.add(row)
    row.status = CredentialStatus.REVOKED.value
    row.secret_hash = None
    row.revoked_at = now
    row.updated_at = now
    await session.flush()
    return row


async def delete(session: AsyncSession, *, device_id: str) -> None:
    """Forget the device's credentials: it may ask again with the fleet secret."""
    row = await get(session, device_id)
    await session.delete(row)
    await session.flush()


@dataclass(frozen=True)
class Snapshot:
    """What a broker needs: approved devices and their hashes, plus a cheap version."""

    version: tuple[int, float]
    approved: dict[str, str]


async def version(session: AsyncSession) -> tuple[int, float]:
    row = (
        await session.execute(
            select(func.count(), func.max(DeviceCredential.updated_at)).select_from(
                DeviceCredential
            )
        )
    ).one()
    return int(row[0] or 0), float(row[1] or 0.0)


async def snapshot(session: AsyncSession) -> Snapshot:
    ver = await version(session)
    rows = await session.execute(
        select(DeviceCredential.device_id, DeviceCredential.secret_hash).where(
            DeviceCredential.status == CredentialStatus.APPROVED.value
        )
    )
    return Snapshot(ver, {device_id: h for device_id, h in rows if h})
