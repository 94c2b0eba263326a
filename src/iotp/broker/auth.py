"""Secure mode in the embedded amqtt broker: who may connect, and to which topics.

Accounts (the same rules are generated for Mosquitto in iotp.broker.mosquitto):

- the platform's processes: one account per role (``settings.mqtt_service_accounts()``),
  password derived from the secret key; every topic.
- a device: username = client id = its node id, password = its secret (approved
  credentials in the database). Publishes only ``devices/{id}/<kind>`` (not
  ``commands``), subscribes and receives only ``devices/{id}/commands``. Its last will
  must be one of its own topics too (amqtt sends wills without a topic check).
- provisioning: username ``provision`` with the fleet secret; client id = the node id
  asking; only ``provision/{id}/request`` and ``provision/{id}/response``.
- Home Assistant (with ``homeassistant_discovery``): username ``homeassistant``, password
  derived from the secret key; the topics of iotp.homeassistant.publish.account_acl.

Credential changes (revocation, rotation) are polled from the database every
``credentials_poll_seconds``; sessions whose credentials went away are disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from iotp.db.auth_models import DeviceCredential
from iotp.homeassistant.publish import Topics, account_allows
from iotp.protocol.provisioning import PROVISION_ROOT, PROVISION_USER
from iotp.protocol.topics import DEVICE_ID_RE, TOPIC_ROOT, Kind
from iotp.services import credentials as cred_service
from iotp.services.auth import verify_mqtt_secret
from iotp.services.credentials import HOMEASSISTANT_USER, RESERVED_USERNAMES, CredentialStatus
from iotp.settings import Settings

log = logging.getLogger(__name__)


class AccountKind(Enum):
    SERVICE = "service"
    DEVICE = "device"
    PROVISION = "provision"
    HOMEASSISTANT = "homeassistant"


def account_kind(
    username: str | None, service_users: Collection[str], homeassistant: bool = False
) -> AccountKind | None:
    if not username:
        return None
    if username in service_users:
        return AccountKind.SERVICE
    if username == PROVISION_USER:
        return AccountKind.PROVISION
    if username == HOMEASSISTANT_USER:
        return AccountKind.HOMEASSISTANT if homeassistant else None
    if DEVICE_ID_RE.fullmatch(username) and username not in RESERVED_USERNAMES:
        return AccountKind.DEVICE
    return None


def topic_allowed(
    kind: AccountKind,
    username: str,
    client_id: str,
    topic: str,
    action: Action,
    ha_topics: Topics | None = None,
) -> bool:
    """The ACL, as one pure function (tests/unit/test_security_acl.py)."""
    if kind is AccountKind.SERVICE:
        return True
    if kind is AccountKind.HOMEASSISTANT:
        return ha_topics is not None and account_allows(
            ha_topics, topic, write=action is Action.PUBLISH
        )
    if kind is AccountKind.PROVISION:
        if DEVICE_ID_RE.fullmatch(client_id) is None:
            return False
        if action is Action.PUBLISH:
            return topic == f"{PROVISION_ROOT}/{client_id}/request"
        return topic == f"{PROVISION_ROOT}/{client_id}/response"
    own = f"{TOPIC_ROOT}/{username}/"
    if action is Action.PUBLISH:
        if not topic.startswith(own):
            return False
        rest = topic[len(own) :]
        return rest != Kind.COMMANDS.value and rest != "" and "/" not in rest
    return topic == own + Kind.COMMANDS.value


def filter_covers(allowed: str, topic: str) -> bool:
    """Whether the topic (or a subscription's filter, its wildcards taken as text) lies
    within the ``allowed`` filter."""
    want = allowed.split("/")
    have = topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have):
            return False
        if level != "+" and level != have[i]:
            return False
        if level == "+" and have[i] == "#":
            return False
    return len(have) == len(want)


def foreign_allowed(acl: dict[str, list[str]], topic: str, action: Action) -> bool:
    """A foreign client's account (iotp.services.adapters): only its mapping's topics."""
    root = topic.split("/", 1)[0]
    if root in (TOPIC_ROOT, PROVISION_ROOT, "iotp") or root.startswith("$"):
        return False
    rules = acl.get("write" if action is Action.PUBLISH else "read", [])
    return any(filter_covers(rule, topic) for rule in rules)


# A login is authenticated before its session is set up and connected (that takes a
# few awaits); the revocation watch keeps it this long before it counts as gone.
LOGIN_SETUP_SECONDS = 10.0


@dataclass
class _Login:
    username: str
    secret_hash: str | None
    at: float


class DeviceAuthority:
    """The broker's view of accounts, shared by the two amqtt plugins below."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.service_accounts = settings.mqtt_service_accounts()
        self.fleet_secret = settings.provisioning_secret.get_secret_value()
        self.homeassistant = settings.homeassistant_discovery
        self.ha_topics = Topics(settings.homeassistant_prefix, settings.homeassistant_topic_root)
        self.broker: Any = None  # amqtt Broker, set by EmbeddedBroker
        self._logins: dict[str, _Login] = {}  # client id -> what it logged in with
        # Foreign clients' topic rules (username -> {"write", "read"}), from the database.
        self.foreign: dict[str, dict[str, list[str]]] = {}
        self._version: tuple[int, float] | None = None
        self._task: asyncio.Task[None] | None = None
        self.refused = 0
        self.kicked = 0

    # ---- connect ------------------------------------------------------------------

    async def authenticate(self, session: Session) -> bool:
        username = session.username
        password = session.password or ""
        client_id = session.client_id or ""
        kind = account_kind(username, self.service_accounts, self.homeassistant)
        ok = False
        secret_hash: str | None = None
        if kind is AccountKind.SERVICE:
            expected = self.service_accounts[username or ""]
            ok = hmac.compare_digest(password.encode(), expected.encode())
        elif kind is AccountKind.HOMEASSISTANT:
            expected = self.settings.homeassistant_mqtt_password()
            ok = hmac.compare_digest(password.encode(), expected.encode())
        elif kind is AccountKind.PROVISION:
            ok = (
                bool(self.fleet_secret)
                and hmac.compare_digest(password.encode(), self.fleet_secret.encode())
                and DEVICE_ID_RE.fullmatch(client_id) is not None
                and client_id not in RESERVED_USERNAMES
                # An approved or revoked device's client id cannot be taken over
                # (connecting with it would disconnect the real device).
                and await self._status(client_id) in (None, CredentialStatus.PENDING)
            )
        elif kind is AccountKind.DEVICE and username == client_id:
            secret_hash = await self._approved_hash(client_id)
            ok = secret_hash is not None and verify_mqtt_secret(password, secret_hash)
        if ok and kind is not None and session.will_flag and session.will_topic:
            ok = self._topic_allowed(
                kind, username or "", client_id, session.will_topic, Action.PUBLISH
            )
        if not ok:
            self.refused += 1
            log.info("MQTT login refused: client %r user %r", client_id[:64], (username or "")[:64])
            return False
        self._logins[client_id] = _Login(username or "", secret_hash, time.monotonic())
        if secret_hash is not None:
            # Checked against the database as it is now, which the revocation watch may
            # not have seen: (count, newest change) can come back to the value it last
            # saw once these credentials are deleted again (issued and forgotten within
            # one poll). The next poll compares every login with a fresh snapshot.
            self._version = None
        return True

    async def _status(self, device_id: str) -> CredentialStatus | None:
        async with self.sessions() as s:
            row = await s.get(DeviceCredential, device_id)
            return None if row is None else CredentialStatus(row.status)

    async def _approved_hash(self, device_id: str) -> str | None:
        async with self.sessions() as s:
            row = await s.get(DeviceCredential, device_id)
            if row is None or row.status != CredentialStatus.APPROVED.value:
                return None
            # A foreign client's topic rules hold from its login on, not from the next
            # poll: until then it would be taken for a device (refused its own topics).
            if row.adapter is not None:
                acl = row.acl or {}
                self.foreign[device_id] = {
                    "write": [str(t) for t in acl.get("write", [])],
                    "read": [str(t) for t in acl.get("read", [])],
                }
            return row.secret_hash

    # ---- topics ---------------------------------------------------------------------

    def allowed(self, session: Session | None, topic: str | None, action: Action | None) -> bool:
        if session is None or topic is None or action is None:
            return False
        kind = account_kind(session.username, self.service_accounts, self.homeassistant)
        if kind is None:
            return False
        return self._topic_allowed(
            kind, session.username or "", session.client_id or "", topic, action
        )

    def _topic_allowed(
        self, kind: AccountKind, username: str, client_id: str, topic: str, action: Action
    ) -> bool:
        if kind is AccountKind.DEVICE and username in self.foreign:
            return foreign_allowed(self.foreign[username], topic, action)
        return topic_allowed(kind, username, client_id, topic, action, self.ha_topics)

    # ---- revocation ---------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._watch(), name="mqtt-credentials")

    async def stop(self) -> None:
        """Let a running database read finish (cancelling it would leak its connection)."""
        if self._task is not None:
            self._stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - keep enforcing with what we have
                log.warning("reading device credentials failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self.settings.credentials_poll_seconds
                )

    async def sync(self) -> int:
        """Disconnect devices whose credentials were revoked or rotated. Returns how many."""
        async with self.sessions() as s:
            version = await cred_service.version(s)
            if version == self._version:
                return 0
            snap = await cred_service.snapshot(s)
        self._version = version
        self.foreign = snap.foreign
        sessions: dict[str, Any] = getattr(self.broker, "_sessions", {}) if self.broker else {}
        kicked = 0
        for client_id, login in list(self._logins.items()):
            entry = sessions.get(client_id)
            if entry is None or entry[0].transitions.state != "connected":
                if time.monotonic() - login.at > LOGIN_SETUP_SECONDS:
                    self._logins.pop(client_id, None)
                else:
                    self._version = None  # look again at the next poll
                continue
            kind = account_kind(login.username, self.service_accounts, self.homeassistant)
            if kind is AccountKind.DEVICE:
                stale = snap.approved.get(login.username) != login.secret_hash
            else:
                stale = False  # provisioning clients leave by themselves once answered
            if stale:
                self._logins.pop(client_id, None)
                log.info("disconnecting %s: credentials changed", client_id)
                with contextlib.suppress(Exception):
                    await entry[1].handle_connection_closed()
                kicked += 1
        self.kicked += kicked
        return kicked


@dataclass
class _Config:
    authority: Any = None


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt auth plugin; config: ``{"authority": DeviceAuthority}``."""

    Config = _Config

    async def authenticate(self, *, session: Session) -> bool | None:
        authority: DeviceAuthority = self.context.config.authority
        return await authority.authenticate(session)


class DeviceTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic plugin; config: ``{"authority": DeviceAuthority}``."""

    Config = _Config

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        authority: DeviceAuthority = self.context.config.authority
        return authority.allowed(session, topic, action)


@dataclass(frozen=True)
class TlsListener:
    cert_file: str
    key_file: str
    port: int


def secure_config(
    config: dict[str, Any],
    host: str,
    authority: DeviceAuthority | None,
    tls: TlsListener | None,
) -> str | None:
    """Adjust an amqtt broker config for secure mode and TLS. Returns the mqtts:// URL
    when a TLS listener was added."""
    if authority is not None:
        config["plugins"] = {
            f"{__name__}.DeviceAuthPlugin": {"authority": authority},
            f"{__name__}.DeviceTopicPlugin": {"authority": authority},
        }
    if tls is None:
        return None
    config["listeners"]["tls"] = {
        "type": "tcp",
        "bind": f"{host}:{tls.port}",
        "ssl": True,
        "certfile": tls.cert_file,
        "keyfile": tls.key_file,
    }
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"mqtts://{connect_host}:{tls.port}"
