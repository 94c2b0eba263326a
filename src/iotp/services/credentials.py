"""Device MQTT credentials: provisioning requests, approval, rotation, revocation.

A device's MQTT username is its node id. Two ways to get a secret:

- issued: an admin calls ``issue`` (API: POST /api/credentials/{id}) and flashes the
  secret shown once into the device;
- provisioned: an unknown device connects with the fleet provisioning secret and asks
  with a secret it generated itself (``request``); it is *pending* until an admin
  approves it (or at once with auto-approval). The secret never travels back, so
  another holder of the fleet secret cannot pick it up.

Every device holds the fleet secret, so whoever opens one can ask in any id's name. The
first secret asked with holds the id: another one is refused (``ProvisioningConflict``,
counted on the row and raised as an alert by ``record_conflict``), and the admin checks
the request's ``fingerprint`` against the one the device itself shows before approving.
Auto-approval admits new ids only: a device the platform already knows waits for an admin.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import DeviceCredential
from iotp.db.automation_models import AlertRow
from iotp.db.models import Device
from iotp.errors import ConflictError, InvalidRequestError, NotFoundError
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.services import alerts as alert_service
from iotp.services.auth import generate_secret, hash_mqtt_secret, verify_mqtt_secret

MIN_DEVICE_SECRET_LENGTH = 16
# Home Assistant's broker account (settings.homeassistant_discovery).
HOMEASSISTANT_USER = "homeassistant"
# MQTT usernames that are never device ids: provisioning, the platform's services and
# Home Assistant.
RESERVED_USERNAMES = frozenset({"provision", "iotp", HOMEASSISTANT_USER})
MAX_DEVICE_SECRET_LENGTH = 256
# Bursts of the provisioner's token buckets (their rates are settings): a device asks
# again every few seconds while it waits, a fleet switched on together asks at once.
PROVISIONING_ID_BURST = 5
PROVISIONING_BURST = 100
FINGERPRINT_BYTES = 6


def fingerprint(secret: str) -> str:
    """What the device shows beside its id (firmware: iotfw.provision.fingerprint):
    the first 6 bytes of the secret's SHA-256, in hex groups of 4 (``3F2A-91BC-07DE``).
    It says nothing usable about the 256-bit secret itself."""
    digest = hashlib.sha256(secret.encode()).hexdigest()[: FINGERPRINT_BYTES * 2].upper()
    return "-".join(digest[i : i + 4] for i in range(0, len(digest), 4))


class ProvisioningConflict(InvalidRequestError):
    """Another secret already holds the id (pending or approved)."""

    def __init__(self, device_id: str, status: str, offered: str, held: str | None) -> None:
        super().__init__(
            f"another secret is already {status} for {device_id!r}: if this device was "
            "reset, an admin must delete its request (or credentials) first"
        )
        self.device_id = device_id
        self.offered = offered
        self.held = held


class ProvisioningFull(InvalidRequestError):
    """Too many requests wait for an admin."""


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
    max_pending: int | None = None,
    now: float | None = None,
) -> CredentialStatus:
    """A provisioning request (the device proved it holds the fleet secret). Raises
    ProvisioningConflict when another secret holds the id, ProvisioningFull when
    ``max_pending`` requests already wait for an admin."""
    _check_id(device_id)
    if not MIN_DEVICE_SECRET_LENGTH <= len(secret) <= MAX_DEVICE_SECRET_LENGTH:
        raise InvalidRequestError(
            f"secret must be {MIN_DEVICE_SECRET_LENGTH}..{MAX_DEVICE_SECRET_LENGTH} characters"
        )
    now = time.time() if now is None else now
    row = await session.get(DeviceCredential, device_id)
    if row is not None and row.status == CredentialStatus.REVOKED.value:
        return CredentialStatus.REVOKED
    if row is not None:
        # Asking again with the secret it asked with (it missed the answer) is answered
        # as before; any other secret is someone else, or a reset device: refused.
        if verify_mqtt_secret(secret, row.secret_hash):
            return CredentialStatus(row.status)
        raise ProvisioningConflict(device_id, row.status, fingerprint(secret), row.fingerprint)
    if max_pending is not None:
        waiting = await session.scalar(
            select(func.count())
            .select_from(DeviceCredential)
            .where(DeviceCredential.status == CredentialStatus.PENDING.value)
        )
        if (waiting or 0) >= max_pending:
            raise ProvisioningFull(
                f"{waiting} requests are already pending approval: ask again later"
            )
    if auto_approve and await session.get(Device, device_id) is not None:
        auto_approve = False  # a known device's id is never handed out unseen
    status = CredentialStatus.APPROVED if auto_approve else CredentialStatus.PENDING
    row = DeviceCredential(
        device_id=device_id,
        status=status.value,
        secret_hash=hash_mqtt_secret(secret),
        fingerprint=fingerprint(secret),
        conflicts=0,
        requested_at=now,
        approved_at=now if auto_approve else None,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return status


async def provisioning_counts(session: AsyncSession) -> tuple[dict[str, int], int]:
    """(credentials by status, provisioning requests refused for another secret)."""
    rows = await session.execute(
        select(
            DeviceCredential.status,
            func.count(),
            func.coalesce(func.sum(DeviceCredential.conflicts), 0),
        ).group_by(DeviceCredential.status)
    )
    by_status: dict[str, int] = {}
    conflicts = 0
    for status, count, refused in rows:
        by_status[str(status)] = int(count)
        conflicts += int(refused)
    return by_status, conflicts


def conflict_alert_key(device_id: str) -> str:
    return f"provisioning:{device_id}"


async def record_conflict(
    session: AsyncSession, conflict: ProvisioningConflict, now: float | None = None
) -> tuple[AlertRow, bool]:
    """Count the refused request on the id's row and raise (or repeat) its alert."""
    now = time.time() if now is None else now
    row = await session.get(DeviceCredential, conflict.device_id)
    if row is not None:
        row.conflicts = (row.conflicts or 0) + 1
    held = conflict.held or "unknown (credentials issued by an admin)"
    return await alert_service.raise_alert(
        session,
        key=conflict_alert_key(conflict.device_id),
        name="Provisioning conflict",
        severity="critical",
        message=(
            f"A provisioning request for {conflict.device_id} came with another secret "
            f"(fingerprint {conflict.offered}) than the one holding the id (fingerprint "
            f"{held}); it was refused. Someone else holds the fleet secret, or the device "
            "was reset: compare the fingerprint the device shows before approving."
        ),
        device_id=conflict.device_id,
        data={"offered": conflict.offered, "held": conflict.held},
        now=now,
    )


async def approve(
    session: AsyncSession, *, device_id: str, now: float | None = None
) -> DeviceCredential:
    row = await get(session, device_id)
    if row.status != CredentialStatus.PENDING.value:
        raise ConflictError(f"device {device_id!r} is {row.status}, not pending")
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
    # Foreign clients' accounts (iotp.services.adapters): username -> {"write", "read"}.
    foreign: dict[str, dict[str, list[str]]] = field(default_factory=dict)


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
        select(
            DeviceCredential.device_id,
            DeviceCredential.secret_hash,
            DeviceCredential.adapter,
            DeviceCredential.acl,
        ).where(DeviceCredential.status == CredentialStatus.APPROVED.value)
    )
    approved: dict[str, str] = {}
    foreign: dict[str, dict[str, list[str]]] = {}
    for device_id, secret_hash, adapter, acl in rows:
        if not secret_hash:
            continue
        approved[device_id] = secret_hash
        if adapter is not None:
            acl = acl or {}
            foreign[device_id] = {
                "write": [str(t) for t in acl.get("write", [])],
                "read": [str(t) for t in acl.get("read", [])],
            }
    return Snapshot(ver, approved, foreign)
