"""RabbitMQ in secure mode: one RabbitMQ user per device, with topic permissions, kept
in step with the platform's device credentials through the management HTTP API.

RabbitMQ's MQTT plugin publishes to ``amq.topic`` with the topic as routing key (``/``
and ``.`` swapped), and checks *topic permissions* (regular expressions on routing
keys, with ``{username}`` expanded by RabbitMQ) on every publish and subscribe. Each
device user gets

- write ``^devices\\.{username}\\.(data|status|info|state|events|ack)$``: its own topics,
- read ``^devices\\.{username}\\.commands$``: its own commands,
- on the vhost: ``amq.topic`` and the MQTT subscription queues of its own client id
  (the device id) only.

RabbitMQ cannot read the platform's (Mosquitto-format) hashes, and the platform never
keeps a device secret. So RabbitMQ gets a device's password at the two moments the
platform holds the secret: when an admin issues or rotates credentials (the API) and
when a device asks with its own secret (provisioning) - ``store_device_secret``, which
sends RabbitMQ its own salted hash, never the secret. Permissions follow the database:
``RabbitMQSync`` (``iotp rabbitmq sync``) polls it like ``iotp mosquitto sync`` and
grants approved devices, strips pending ones, and deletes (and disconnects) revoked or
forgotten ones. Users it manages carry the tag ``iotp-device``; others are left alone.
See docs/security.md and docs/operations.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from iotp.homeassistant.publish import READ, WRITE, Topics, account_acl
from iotp.protocol.provisioning import PROVISION_ROOT, PROVISION_USER
from iotp.protocol.topics import DEVICE_ID_RE, TOPIC_ROOT, Kind
from iotp.services import credentials as cred_service
from iotp.services.credentials import HOMEASSISTANT_USER, CredentialStatus
from iotp.settings import Settings

log = logging.getLogger(__name__)

DEVICE_TAG = "iotp-device"
SERVICE_TAG = "iotp-service"
EXCHANGE = "amq.topic"
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
TIMEOUT_SECONDS = 10.0

_DEVICE_KINDS = "|".join(k.value for k in Kind if k is not Kind.COMMANDS)
DEVICE_WRITE = rf"^{TOPIC_ROOT}\.{{username}}\.({_DEVICE_KINDS})$"
DEVICE_READ = rf"^{TOPIC_ROOT}\.{{username}}\.{Kind.COMMANDS.value}$"
PROVISION_WRITE = rf"^{PROVISION_ROOT}\.[^.]+\.request$"
PROVISION_READ = rf"^{PROVISION_ROOT}\.[^.]+\.response$"


# Home Assistant's client id must start with its username here: its subscription queues
# are the only ones it may use (any client id would reach the platform's own sessions).
HOMEASSISTANT_CLIENT_IDS = rf"{HOMEASSISTANT_USER}[A-Za-z0-9_-]*"


def routing_key_pattern(topic_filter: str) -> str:
    """A regular expression for the routing keys (and binding keys) of an MQTT topic
    filter as RabbitMQ's MQTT plugin writes them: ``/`` becomes ``.``; ``+`` one word,
    ``#`` the rest (a subscription's own ``*`` and ``#`` match as words too)."""
    words = []
    for level in topic_filter.split("/"):
        if level == "#":
            words.append(r".*")
        elif level == "+":
            words.append(r"[^.]+")
        else:
            words.append(re.escape(level.replace(".", "/")))
    return r"\.".join(words).replace(r"\..*", r"(\..*)?")


def homeassistant_permissions(topics: Topics) -> tuple[str, str]:
    """(write, read) topic permissions of Home Assistant's account: account_acl's."""
    acl = account_acl(topics)
    write = "|".join(routing_key_pattern(t) for a, t in acl if a == WRITE)
    read = "|".join(routing_key_pattern(t) for a, t in acl if a == READ)
    return f"^({write})$", f"^({read})$"


def foreign_permissions(acl: dict[str, Any]) -> tuple[str, str]:
    """(write, read) topic permissions of a foreign client's account (iotp.services.adapters):
    its mapping's topics for its scope, nothing else (an empty list: a pattern no routing
    key matches)."""
    write = "|".join(routing_key_pattern(str(t)) for t in acl.get("write", []))
    read = "|".join(routing_key_pattern(str(t)) for t in acl.get("read", []))
    nothing = r"^(?!)$"
    return (f"^({write})$" if write else nothing), (f"^({read})$" if read else nothing)


class RabbitMQError(RuntimeError):
    """The management API refused or could not be reached."""


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's own format (rabbit_password_hashing_sha256): base64(salt + sha256(salt
    + password)) with a 4-byte salt; sent instead of the password."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def vhost_permissions(client_id: str | None) -> dict[str, str]:
    """amq.topic and the MQTT subscription queues of one client id
    (``mqtt-subscription-<client id>qos0|1``; a device's client id is its id, which no
    other id extends into a match), or of any client id (``None``)."""
    queues = rf"mqtt-subscription-{client_id}qos[01]" if client_id else r"mqtt-subscription-.*"
    pattern = rf"^(amq\.topic|{queues})$"
    return {"configure": pattern, "write": pattern, "read": pattern}


@dataclass(frozen=True)
class Management:
    """A small client of RabbitMQ's management HTTP API (``/api/...``)."""

    url: str
    vhost: str = "/"

    def _client(self) -> httpx.AsyncClient:
        parts = urlsplit(self.url)
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc += f":{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api", "", ""))
        return httpx.AsyncClient(base_url=base, auth=auth, timeout=TIMEOUT_SECONDS)

    @property
    def _v(self) -> str:
        return quote(self.vhost, safe="")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self._client() as http:
                response = await http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RabbitMQError(f"RabbitMQ management API unreachable: {exc}") from exc
        if method == "DELETE" and response.status_code == 404:
            return None  # already gone
        if response.status_code >= 400:
            raise RabbitMQError(
                f"RabbitMQ management API: {method} {path} -> {response.status_code} "
                f"{response.text[:200]}"
            )
        return response.json() if response.content else None

    async def users(self) -> dict[str, set[str]]:
        """user name -> tags."""
        rows = await self._call("GET", "/users")
        out: dict[str, set[str]] = {}
        for row in rows or []:
            tags = row.get("tags") or []
            if isinstance(tags, str):
                tags = [t for t in tags.split(",") if t]
            out[row["name"]] = set(tags)
        return out

    async def put_user(self, name: str, password: str, tag: str) -> None:
        body = {
            "password_hash": password_hash(password),
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": tag,
        }
        await self._call("PUT", f"/users/{quote(name, safe='')}", body)

    async def delete_user(self, name: str) -> None:
        await self._call("DELETE", f"/users/{quote(name, safe='')}")

    async def permitted(self) -> set[str]:
        """Users with permissions on the vhost."""
        rows = await self._call("GET", f"/vhosts/{self._v}/permissions")
        return {row["user"] for row in rows or []}

    async def grant(self, name: str, permissions: dict[str, str], write: str, read: str) -> None:
        user = quote(name, safe="")
        await self._call("PUT", f"/permissions/{self._v}/{user}", permissions)
        topic = {"exchange": EXCHANGE, "write": write, "read": read}
        await self._call("PUT", f"/topic-permissions/{self._v}/{user}", topic)

    async def strip(self, name: str) -> None:
        user = quote(name, safe="")
        await self._call("DELETE", f"/permissions/{self._v}/{user}")
        await self._call("DELETE", f"/topic-permissions/{self._v}/{user}")

    async def disconnect(self, name: str) -> None:
        """Close the user's connections (MQTT ones included), from RabbitMQ's connection
        tracking (not the statistics, which lag by seconds)."""
        await self._call("DELETE", f"/connections/username/{quote(name, safe='')}")


def management(settings: Settings) -> Management | None:
    if not settings.rabbitmq_management_url:
        return None
    return Management(settings.rabbitmq_management_url, settings.rabbitmq_vhost)


async def grant_device(api: Management, device_id: str, acl: dict[str, Any] | None = None) -> None:
    """A device's permissions, or with ``acl`` a foreign client's (its mapping's topics)."""
    if acl is not None:
        write, read = foreign_permissions(acl)
        await api.grant(device_id, vhost_permissions(device_id), write, read)
        return
    await api.grant(device_id, vhost_permissions(device_id), DEVICE_WRITE, DEVICE_READ)


async def store_device_secret(
    settings: Settings,
    device_id: str,
    secret: str,
    *,
    approved: bool,
    acl: dict[str, Any] | None = None,
) -> None:
    """Give RabbitMQ the device's (new) password; no-op unless
    IOTP_RABBITMQ_MANAGEMENT_URL is set. An approved device gets its permissions at once
    and a connection made with an older password is closed; a pending one gets none
    until ``RabbitMQSync`` sees it approved. Raises RabbitMQError."""
    api = management(settings)
    if api is None or DEVICE_ID_RE.fullmatch(device_id) is None:
        return
    await api.put_user(device_id, secret, DEVICE_TAG)
    if approved:
        await grant_device(api, device_id, acl)
    else:
        await api.strip(device_id)
    await api.disconnect(device_id)


class RabbitMQSync:
    """Keeps RabbitMQ's device users and permissions in step with the database."""

    def __init__(self, settings: Settings, engine: AsyncEngine, api: Management) -> None:
        self.settings = settings
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.api = api
        self._version: tuple[int, float] | None = None
        self._warned: set[str] = set()
        self.changes = 0

    async def ensure_service_accounts(self) -> None:
        """The platform's own account (secure mode), the provisioning account, and Home
        Assistant's (secure mode, with discovery)."""
        if self.settings.secure:
            everything = {"configure": ".*", "write": ".*", "read": ".*"}
            for user, password in self.settings.mqtt_service_accounts().items():
                await self.api.put_user(user, password, SERVICE_TAG)
                await self.api.grant(user, everything, ".*", ".*")
        fleet = self.settings.provisioning_secret.get_secret_value()
        if fleet:
            await self.api.put_user(PROVISION_USER, fleet, SERVICE_TAG)
            # Provisioning clients use the device id as client id: any subscription
            # queue. (So a fleet-secret holder could resume an offline device's persistent
            # session and read its queued commands: docs/operations.md, "RabbitMQ".)
            await self.api.grant(
                PROVISION_USER, vhost_permissions(None), PROVISION_WRITE, PROVISION_READ
            )
        if self.settings.secure and self.settings.homeassistant_discovery:
            topics = Topics(
                self.settings.homeassistant_prefix, self.settings.homeassistant_topic_root
            )
            write, read = homeassistant_permissions(topics)
            await self.api.put_user(
                HOMEASSISTANT_USER, self.settings.homeassistant_mqtt_password(), SERVICE_TAG
            )
            await self.api.grant(
                HOMEASSISTANT_USER, vhost_permissions(HOMEASSISTANT_CLIENT_IDS), write, read
            )

    async def sync(self) -> bool:
        """Apply the credentials if they changed since the last call."""
        async with self.sessions() as session:
            version = await cred_service.version(session)
            if version == self._version:
                return False
            rows = await cred_service.list_credentials(session)
        status = {row.device_id: row.status for row in rows}
        # Foreign clients' accounts: their mapping's topics instead of a device's.
        acls = {row.device_id: dict(row.acl or {}) for row in rows if row.adapter is not None}
        users = await self.api.users()
        permitted = await self.api.permitted()
        changes = 0
        for name, tags in users.items():
            if DEVICE_TAG not in tags:
                continue  # not ours
            state = status.get(name)
            if state == CredentialStatus.APPROVED.value:
                if name not in permitted:
                    await grant_device(self.api, name, acls.get(name))
                    changes += 1
            elif state == CredentialStatus.PENDING.value:
                if name in permitted:
                    await self.api.strip(name)
                    changes += 1
            else:  # revoked, or the credentials were deleted
                await self.api.delete_user(name)
                await self.api.disconnect(name)
                changes += 1
        for device_id, state in status.items():
            missing = state == CredentialStatus.APPROVED.value and device_id not in users
            if missing and device_id not in self._warned:
                self._warned.add(device_id)
                log.warning(
                    "RabbitMQ has no password for device %s (its credentials predate the "
                    "RabbitMQ sync): issue new ones (POST /api/credentials/%s)",
                    device_id,
                    device_id,
                )
        self._version = version
        self.changes += changes
        if changes:
            log.info("RabbitMQ: %d device account change(s)", changes)
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.ensure_service_accounts()
                break
            except RabbitMQError as exc:
                log.warning("RabbitMQ service accounts: %s", exc)
                await asyncio.sleep(self.settings.credentials_poll_seconds)
        while True:
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("RabbitMQ sync failed: %s", exc)
                self._version = None
            await asyncio.sleep(self.settings.credentials_poll_seconds)
