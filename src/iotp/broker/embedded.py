"""amqtt inside `iotp serve`. Production points IOTP_MQTT_URL at Mosquitto or RabbitMQ
instead; nothing else in the platform knows which broker it talks to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session
from sqlalchemy.ext.asyncio import AsyncEngine

from iotp.broker.auth import DeviceAuthority, TlsListener, secure_config
from iotp.services.errors import ConfigurationError
from iotp.settings import Settings

log = logging.getLogger(__name__)


class BrokerHandle(Protocol):
    url: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class _OpenConfig:
    pass


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Open mode: every client may connect. Unlike amqtt's AnonymousAuthPlugin it does
    not flag the session as anonymous: amqtt 0.12 neither queues QoS 1/2 messages for a
    disconnected anonymous session nor keeps the session at all, so the worker's
    persistent session (clean_session=False) lost the device acks and data published
    while it restarted. MQTT 3.1.2.4 says they are kept, as Mosquitto does (secure mode
    already behaves so: its sessions are authenticated)."""

    Config = _OpenConfig

    async def authenticate(self, *, session: Session) -> bool:
        return True


class EmbeddedBroker:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        authority: DeviceAuthority | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.host = host
        self.port = port
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"mqtt://{connect_host}:{port}"
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            # Quiet: no $SYS topics, no per-packet logging.
            "plugins": {
                f"{__name__}.OpenAuthPlugin": {},
            },
        }
        # security (docs/security.md): secure mode and TLS
        self.authority = authority
        self.tls_url = secure_config(config, host, authority, tls)
        self._broker = Broker(config)
        if authority is not None:
            authority.broker = self._broker
        # amqtt logs every connection at INFO; keep the platform's log readable.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)

    @classmethod
    def for_settings(
        cls, settings: Settings, engine: AsyncEngine | None, host: str, port: int
    ) -> EmbeddedBroker:
        """security: credentials and topic ACLs in secure mode, MQTTS when a cert is set."""
        authority = None
        if settings.secure:
            if engine is None:
                raise ConfigurationError("secure mode: the broker needs the database")
            authority = DeviceAuthority(settings, engine)
        tls = None
        if settings.tls_cert_file and settings.tls_key_file:
            tls = TlsListener(
                str(settings.tls_cert_file), str(settings.tls_key_file), settings.mqtt_tls_port
            )
        return cls(host, port, authority=authority, tls=tls)

    async def start(self) -> None:
        await self._broker.start()
        if self.authority is not None:
            self.authority.start()
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.authority is not None:
            await self.authority.stop()
        await self._broker.shutdown()
