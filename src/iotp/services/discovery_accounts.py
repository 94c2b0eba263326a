"""Broker accounts for devices that announce themselves with Home Assistant discovery
(docs/devices.md#home-assistant), so that they work in secure mode.

Such an account is a foreign client's account (iotp.services.adapters): a device
credential whose ``acl`` lists what it may write and read, enforced by every broker the
platform runs (Mosquitto's acl_file, the amqtt fallback). Its ``adapter`` is
``homeassistant``. For node id ``N`` (the device's id on the platform) it may

- write its discovery configs ``<prefix>/+/N/+/config``: only configs that carry its
  node id, since a config without one takes its device id from the config's body, which
  would let it announce itself as any other device;
- write everything under its state root (readings, switch states, availability);
- read everything under its command root.

The roots are given by the admin and may never be the platform's topics, Home
Assistant's own, an adapter's, or overlap another foreign account's topics.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.adapters.spec import RESERVED_ROOTS, parse_pattern
from iotp.db.auth_models import DeviceCredential
from iotp.db.models import Device
from iotp.errors import InvalidRequestError
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.services import adapters as adapter_service
from iotp.services import credentials as cred_service
from iotp.settings import Settings

ADAPTER = "homeassistant"  # the ``adapter`` of these accounts (and the devices' type)
_ROOT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,3}$")


def overlaps(a: str, b: str) -> bool:
    """Whether some topic matches both filters."""
    x, y = a.split("/"), b.split("/")
    for i in range(max(len(x), len(y))):
        if i >= len(x) or i >= len(y):
            return False
        if x[i] == "#" or y[i] == "#":
            return True
        if x[i] != "+" and y[i] != "+" and x[i] != y[i]:
            return False
    return True


def _check_root(kind: str, root: str, taken: set[str]) -> None:
    if _ROOT_RE.fullmatch(root) is None:
        raise InvalidRequestError(
            f"{kind} root {root!r}: one to four topic levels of letters, digits, _ . -"
        )
    first = root.split("/", 1)[0]
    if first in taken or first.startswith("$"):
        raise InvalidRequestError(
            f"{kind} root {root!r} lies in {first}/, topics that belong to the platform, "
            "Home Assistant or an adapter"
        )


def account_acl(
    settings: Settings, node: str, state_root: str, command_root: str, adapter_roots: set[str]
) -> dict[str, list[str]]:
    taken = (
        set(RESERVED_ROOTS)
        | adapter_roots
        | {
            settings.homeassistant_prefix,
            settings.homeassistant_topic_root,
            settings.events_topic_prefix.split("/", 1)[0],
        }
    )
    _check_root("state", state_root, taken)
    _check_root("command", command_root, taken)
    return {
        "write": [f"{settings.homeassistant_prefix}/+/{node}/+/config", f"{state_root}/#"],
        "read": [f"{command_root}/#"],
    }


async def issue(
    session: AsyncSession,
    *,
    settings: Settings,
    node: str,
    state_root: str,
    command_root: str,
    now: float | None = None,
) -> tuple[DeviceCredential, str]:
    """Create (or rotate) the account of the discovery-announcing device ``node``;
    returns the password, once. Its username (and MQTT client id) is the node id."""
    if (
        DEVICE_ID_RE.fullmatch(node) is None
        or node in cred_service.RESERVED_USERNAMES
        or node in settings.mqtt_service_accounts()
    ):
        raise InvalidRequestError(f"{node!r} cannot be a device's node id")
    roots: set[str] = set()
    for mapping in await adapter_service.active(session, settings):
        for rule in mapping.rules:
            first = parse_pattern(rule.topic)[0]
            if first.literal is not None:
                roots.add(first.literal)
    acl = account_acl(settings, node, state_root, command_root, roots)
    existing = await session.get(DeviceCredential, node)
    if existing is not None and existing.adapter != ADAPTER:
        raise InvalidRequestError(f"{node!r} already has an account of another kind")
    device = await session.get(Device, node)
    if device is not None and device.type != ADAPTER:
        raise InvalidRequestError(f"{node!r} is the id of a device that does not use discovery")
    # Two accounts sharing topics could forge each other's readings or read each
    # other's commands: refused, whatever the order they were issued in.
    mine = acl["write"] + acl["read"]
    for other in await adapter_service.accounts(session):
        if other.device_id == node:
            continue
        theirs = [*(other.acl or {}).get("write", []), *(other.acl or {}).get("read", [])]
        clash = next((t for t in theirs for m in mine if overlaps(str(t), m)), None)
        if clash is not None:
            raise InvalidRequestError(
                f"the account {other.device_id!r} already has {clash!r}: choose other roots"
            )
    row, secret = await cred_service.issue(session, device_id=node, now=now)
    row.adapter = ADAPTER
    row.acl = acl
    row.fingerprint = None
    await session.flush()
    return row, secret


async def accounts(session: AsyncSession) -> list[str]:
    """The node ids that have such an account (approved or not)."""
    query = select(DeviceCredential.device_id).where(DeviceCredential.adapter == ADAPTER)
    return list((await session.scalars(query)).all())
