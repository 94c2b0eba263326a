"""Firmware registry: bundles on disk under ``data_dir/firmware``, metadata in the
database, SHA-256 computed by the platform (never trusted from the uploader). Every
bundle is checked whole at upload (services.manifest); an unsigned one is signed with
the server's key when it has one (services.signing), a signed one is kept as signed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import CommandRow, FirmwareRow, RolloutRow
from iotp.errors import AuthError, ConflictError, InvalidRequestError, NotFoundError
from iotp.protocol.commands import OTA_STAGES, OTA_URL_MAX
from iotp.services import manifest, signing
from iotp.services.auth import DownloadGrant, sign_path
from iotp.services.commands import is_terminal
from iotp.services.manifest import BundleFormatError, public_bytes

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
ACTIVE_ROLLOUT = ("running", "paused")
# A platform bundle's download path, at the end of a URL's path (a proxy may add a prefix).
DOWNLOAD_PATH = re.compile(r"/api/firmware/\d+/download$")
# Progress stages a device reports once it holds the whole bundle: its URL is spent.
AFTER_DOWNLOAD = frozenset(OTA_STAGES[1:])


def firmware_dir(data_dir: Path) -> Path:
    return data_dir / "firmware"


def bundle_path(data_dir: Path, row: FirmwareRow) -> Path:
    return firmware_dir(data_dir) / row.filename


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


async def upload(
    session: AsyncSession,
    *,
    data_dir: Path,
    version: str | None,
    data: bytes,
    notes: str = "",
    device_type: str = "",
    now: float | None = None,
) -> FirmwareRow:
    """version, when given, must be the bundle's own."""
    if version is not None and VERSION_RE.fullmatch(version) is None:
        raise InvalidRequestError(
            "version must be 1..64 characters of letters, digits and . _ + - "
            "(starting with a letter or digit)"
        )
    if not data:
        raise InvalidRequestError("the bundle is empty: send it as the request body")
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidRequestError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        bundle = await asyncio.to_thread(manifest.parse, data)
    except BundleFormatError as exc:
        raise InvalidRequestError(f"bad bundle: {exc}") from None
    if version is not None and version != bundle.version:
        raise InvalidRequestError(
            f"the bundle is version {bundle.version!r}, not {version!r} as the request says"
        )
    if VERSION_RE.fullmatch(bundle.version) is None:
        raise InvalidRequestError(
            f"the bundle's version {bundle.version!r} must be 1..64 characters of letters, "
            "digits and . _ + - (starting with a letter or digit)"
        )
    version = bundle.version
    if len(notes) > 4000:
        raise InvalidRequestError("notes are longer than 4000 characters")
    if device_type and len(device_type) > 64:
        raise InvalidRequestError("device_type is longer than 64 characters")
    existing = await session.scalar(
        select(FirmwareRow.id).where(
            FirmwareRow.version == version, FirmwareRow.device_type == device_type
        )
    )
    if existing is not None:
        raise ConflictError(
            f"firmware {version!r}{' for ' + device_type if device_type else ''} "
            f"already exists (id {existing}); delete it first or use a new version"
        )
    if bundle.key_id is None:
        current, nxt = await asyncio.to_thread(signing.server_keys, data_dir)
        if current is not None:
            bundle = bundle.sign(
                current, next_key=None if nxt is None else public_bytes(nxt.public_key())
            )
            data = bundle.to_bytes()
    sha = hashlib.sha256(data).hexdigest()
    filename = f"{uuid.uuid4().hex}.bin"
    row = FirmwareRow(
        version=version,
        device_type=device_type,
        notes=notes,
        filename=filename,
        size=len(data),
        sha256=sha,
        key_id=bundle.key_id,
        next_key_id=bundle.next_key_id,
        created_at=time.time() if now is None else now,
    )
    path = firmware_dir(data_dir) / filename
    await asyncio.to_thread(_write, path, data)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise ConflictError(f"firmware {version!r} already exists") from None
    return row


async def list_firmware(session: AsyncSession) -> list[FirmwareRow]:
    query = select(FirmwareRow).order_by(FirmwareRow.created_at.desc(), FirmwareRow.id.desc())
    return list((await session.scalars(query)).all())


async def get(session: AsyncSession, firmware_id: int) -> FirmwareRow:
    row = await session.get(FirmwareRow, firmware_id)
    if row is None:
        raise NotFoundError("firmware", str(firmware_id))
    return row


async def delete(session: AsyncSession, *, data_dir: Path, firmware_id: int) -> None:
    row = await get(session, firmware_id)
    using = (
        await session.scalars(
            select(RolloutRow.id).where(
                RolloutRow.firmware_id == firmware_id, RolloutRow.status.in_(ACTIVE_ROLLOUT)
            )
        )
    ).all()
    if using:
        raise ConflictError(
            f"firmware {row.version!r} is used by active rollout(s) {list(using)}: "
            "cancel them first"
        )
    path = bundle_path(data_dir, row)
    await session.delete(row)
    await session.flush()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# ---- per-device download URLs ----------------------------------------------------------


def download_path(firmware_id: int) -> str:
    return f"/api/firmware/{firmware_id}/download"


def url_expiry(row: CommandRow) -> float:
    """The latest a command can still be open: sent at the end of its queue life
    (``expires_at``), then given its ack ``timeout``."""
    return row.expires_at + row.timeout


def sign_ota_url(row: CommandRow, *, key: str) -> bool:
    """Sign an ``ota`` command's ``url`` for its device and this command, when it names
    a bundle of this platform (its download path, no query); other URLs stay as given.
    The row must have its id and deadlines, and not be committed yet. True if signed;
    InvalidRequestError when the signed URL would be longer than devices accept."""
    url = row.params.get("url") if row.command == "ota" else None
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    found = DOWNLOAD_PATH.search(parts.path)
    if found is None or parts.query or parts.fragment:
        return False
    signed = sign_path(
        found.group(0),
        key=key,
        device_id=row.device_id,
        command_id=row.id,
        expires_at=url_expiry(row),
    )
    full = urlunsplit((parts.scheme, parts.netloc, parts.path[: found.start()], "", "")) + signed
    if len(full) > OTA_URL_MAX:
        raise InvalidRequestError(
            f"url is too long to carry its signature (at most {OTA_URL_MAX} characters signed)"
        )
    row.params = {**row.params, "url": full}
    return True


async def check_download_grant(
    session: AsyncSession, grant: DownloadGrant, *, now: float | None = None
) -> None:
    """A signed URL is good only while its command is open and its device has not yet
    got the bundle; AuthError with the reason otherwise."""
    now = time.time() if now is None else now
    row = await session.get(CommandRow, grant.command_id)
    if row is None or row.device_id != grant.device_id or row.command != "ota":
        raise AuthError("no such ota command for this device")
    if is_terminal(row.status):
        raise AuthError(f"the ota command has ended ({row.status})")
    if row.deadline is not None and now > row.deadline:
        raise AuthError("the ota command's deadline has passed")
    stage = (row.progress or {}).get("stage")
    if stage in AFTER_DOWNLOAD:
        raise AuthError(f"the device has downloaded the bundle already (stage {stage})")
