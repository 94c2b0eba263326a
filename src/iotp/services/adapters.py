"""Adapter mappings in force (shipped, files, added through the API) and the broker
accounts of foreign clients (a Tasmota, a Zigbee2MQTT bridge, a Shelly).

A foreign account is a device credential whose ``acl`` lists the topics it may write
and read, rendered from its mapping's ``account`` with the scope an admin gives (the
Tasmota topic, the Shelly id). The scope can never reach the platform's topics or
another mapping's fixed roots, so an account cannot speak for devices beyond its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.adapters import BUILTIN, Mapping, builtin, load_dir
from iotp.adapters.engine import render
from iotp.adapters.spec import RESERVED_ROOTS, parse_pattern
from iotp.db.adapter_models import AdapterMappingRow
from iotp.db.auth_models import DeviceCredential
from iotp.db.models import CommandRow, Device
from iotp.errors import InvalidRequestError, NotFoundError
from iotp.protocol.events import CommandStatus
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.services import credentials as cred_service
from iotp.settings import Settings


def configured(settings: Settings) -> list[Mapping]:
    """The shipped mappings that are on (IOTP_ADAPTERS_<NAME>) and the operator's files
    (IOTP_ADAPTERS_DIR); a file may replace a shipped mapping by its name."""
    found: dict[str, Mapping] = {}
    for name in BUILTIN:
        if getattr(settings, f"adapters_{name}"):
            found[name] = builtin(name)
    if settings.adapters_dir is not None and settings.adapters_dir.is_dir():
        for mapping in load_dir(settings.adapters_dir):
            found[mapping.name] = mapping
    return list(found.values())


@dataclass(frozen=True)
class Entry:
    mapping: Mapping
    source: str  # builtin | file | api
    enabled: bool


async def stored(session: AsyncSession) -> list[AdapterMappingRow]:
    return list(
        (await session.scalars(select(AdapterMappingRow).order_by(AdapterMappingRow.name))).all()
    )


# Open commands looked at for one report of a device: more in flight at once for one
# device than this is no use case, and older ones time out as before.
OPEN_COMMANDS_LOOKED_AT = 16


async def open_commands(
    session: AsyncSession, device_id: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """The device's commands that may still be acknowledged (``sending``, ``sent``),
    newest first, as (id, command, params): what a firmware's report may answer when
    another worker published the command."""
    rows = await session.execute(
        select(CommandRow.id, CommandRow.command, CommandRow.params)
        .where(
            CommandRow.device_id == device_id,
            CommandRow.status.in_((CommandStatus.SENDING.value, CommandStatus.SENT.value)),
        )
        .order_by(CommandRow.created_at.desc())
        .limit(OPEN_COMMANDS_LOOKED_AT)
    )
    return [(i, c, p if isinstance(p, dict) else {}) for i, c, p in rows]


async def version(session: AsyncSession) -> tuple[int, float]:
    row = (
        await session.execute(
            select(func.count(), func.max(AdapterMappingRow.updated_at)).select_from(
                AdapterMappingRow
            )
        )
    ).one()
    return int(row[0] or 0), float(row[1] or 0.0)


async def entries(session: AsyncSession, settings: Settings) -> list[Entry]:
    """Every mapping the platform knows, with where it comes from and whether it is on.
    A mapping saved through the API replaces a shipped or file one of the same name."""
    out: dict[str, Entry] = {}
    for mapping in configured(settings):
        source = (
            "builtin" if mapping.name in BUILTIN and mapping == builtin(mapping.name) else "file"
        )
        out[mapping.name] = Entry(mapping, source, True)
    for name in BUILTIN:
        if name not in out:
            out[name] = Entry(builtin(name), "builtin", False)
    for row in await stored(session):
        try:
            mapping = Mapping.model_validate(row.spec)
        except ValueError:
            continue  # a row written by a newer version: skipped, not fatal
        out[row.name] = Entry(mapping, "api", row.enabled)
    return sorted(out.values(), key=lambda e: e.mapping.name)


async def active(session: AsyncSession, settings: Settings) -> list[Mapping]:
    return [e.mapping for e in await entries(session, settings) if e.enabled]


async def save(
    session: AsyncSession, *, mapping: Mapping, enabled: bool = True, now: float | None = None
) -> AdapterMappingRow:
    now = time.time() if now is None else now
    row = await session.get(AdapterMappingRow, mapping.name)
    if row is None:
        row = AdapterMappingRow(name=mapping.name)
        session.add(row)
    row.spec = mapping.model_dump(mode="json", exclude_defaults=True)
    row.enabled = enabled
    row.updated_at = now
    await session.flush()
    return row


async def set_enabled(
    session: AsyncSession, *, settings: Settings, name: str, enabled: bool, now: float | None = None
) -> AdapterMappingRow:
    """Turn a mapping on or off at run time (a shipped one too: saved as a copy)."""
    for entry in await entries(session, settings):
        if entry.mapping.name == name:
            return await save(session, mapping=entry.mapping, enabled=enabled, now=now)
    raise NotFoundError("mapping", name)


async def delete(session: AsyncSession, *, name: str) -> None:
    """Forget a mapping saved through the API (a shipped one comes back as configured)."""
    row = await session.get(AdapterMappingRow, name)
    if row is None:
        raise NotFoundError("mapping", name)
    # Bump the version the workers poll, even though the row goes: they compare it.
    await session.delete(row)
    await session.flush()


# ---- foreign accounts ------------------------------------------------------------------


def _literal_roots(mappings: list[Mapping]) -> set[str]:
    roots: set[str] = set()
    for mapping in mappings:
        for rule in mapping.rules:
            first = parse_pattern(rule.topic)[0]
            if first.literal is not None:
                roots.add(first.literal)
    return roots


def account_acl(
    mapping: Mapping, scope: str | None, mappings: list[Mapping]
) -> dict[str, list[str]]:
    """The topics a foreign account may write and read. Raises InvalidRequestError when
    the mapping has no account or the scope would reach beyond its own topics."""
    spec = mapping.account
    if spec is None:
        raise InvalidRequestError(f"the {mapping.name} mapping defines no account")
    if spec.scope is not None:
        if not scope or DEVICE_ID_RE.fullmatch(scope) is None:
            raise InvalidRequestError(
                f"the {mapping.name} account needs its {spec.scope} as scope, "
                f"matching {DEVICE_ID_RE.pattern}"
            )
    elif scope:
        raise InvalidRequestError(f"the {mapping.name} account takes no scope")
    taken = RESERVED_ROOTS | _literal_roots(mappings)
    acl: dict[str, list[str]] = {"write": [], "read": []}
    for kind, templates in (("write", spec.write), ("read", spec.read)):
        for template in templates:
            topic = render(template, {"scope": scope or ""})
            root = topic.split("/", 1)[0]
            fixed = not template.startswith("{")
            if root.startswith("$") or root in RESERVED_ROOTS or (not fixed and root in taken):
                raise InvalidRequestError(
                    f"scope {scope!r} would give the account {topic!r}, topics that are not its own"
                )
            acl[kind].append(topic)
    return acl


async def issue_account(
    session: AsyncSession,
    *,
    settings: Settings,
    mapping_name: str,
    username: str,
    scope: str | None,
    now: float | None = None,
) -> tuple[DeviceCredential, str]:
    """Create (or rotate) a foreign client's broker account; returns the password, once."""
    mappings = await active(session, settings)
    mapping = next((m for m in mappings if m.name == mapping_name), None)
    if mapping is None:
        raise NotFoundError("mapping", mapping_name)
    acl = account_acl(mapping, scope, mappings)
    existing = await session.get(DeviceCredential, username)
    if existing is not None and existing.adapter is None:
        raise InvalidRequestError(
            f"{username!r} is a device's account, not a {mapping_name} client's"
        )
    device = await session.get(Device, username)
    if existing is None and device is not None and device_adapter(device) is None:
        raise InvalidRequestError(f"{username!r} is a device's id: choose another account name")
    row, secret = await cred_service.issue(session, device_id=username, now=now)
    row.adapter = mapping.name
    row.acl = acl
    row.fingerprint = None
    await session.flush()
    return row, secret


def account_view(row: DeviceCredential) -> dict[str, Any]:
    return {
        "username": row.device_id,
        "mapping": row.adapter,
        "status": row.status,
        "write": list((row.acl or {}).get("write", [])),
        "read": list((row.acl or {}).get("read", [])),
        "updated_at": row.updated_at,
    }


async def accounts(session: AsyncSession) -> list[DeviceCredential]:
    query = (
        select(DeviceCredential)
        .where(DeviceCredential.adapter.is_not(None))
        .order_by(DeviceCredential.device_id)
    )
    return list((await session.scalars(query)).all())


def device_adapter(device: Device) -> str | None:
    """The mapping that speaks for a device, or None for the platform's own devices."""
    meta = device.meta or {}
    adapter = meta.get("adapter")
    if isinstance(adapter, dict) and isinstance(adapter.get("mapping"), str):
        return str(adapter["mapping"])
    return None
