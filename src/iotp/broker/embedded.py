"""amqtt inside `iotp serve`. Production points IOTP_MQTT_URL at Mosquitto or RabbitMQ
instead; nothing else in the platform knows which broker it talks to.

Two guards at our boundary with amqtt 0.12 (``GuardedBroker``):

- a CONNECT is authenticated before any session is touched. amqtt deletes a clean
  session's namesake, or takes over a persistent one (and copies the newcomer's
  credentials and will into it), before it asks the auth plugins: one refused CONNECT
  with the worker's or a device's client id would stop ingest or cut the device off.
- a packet larger than ``max_packet_bytes`` is refused at its fixed header, before its
  body is read: amqtt would read a PUBLISH of up to 256 MB into memory.
- retained messages go only to a client's own subscriptions, each past the ACL. At
  every CONNECT amqtt hands the client the retained messages of every topic filter
  *any* client subscribes to (the worker's ``devices/+/info`` included), and it never
  asks the topic plugins about retained deliveries.
- the subscriptions are walked over a copy: amqtt awaits the ACL while it iterates over
  them, so a client subscribing meanwhile made the message being delivered fail with
  "dictionary changed size during iteration" (lost for every subscriber), and one
  unsubscribing could make another subscriber miss it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from amqtt.adapters import ReaderAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session
from sqlalchemy.ext.asyncio import AsyncEngine

from iotp.broker.auth import DeviceAuthority, TlsListener, secure_config
from iotp.errors import ConfigurationError
from iotp.settings import DEFAULT_MAX_PACKET_BYTES, Settings

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


class PacketTooLarge(NoDataError):  # type: ignore[misc]
    """Ends the connection the way a closed socket does (amqtt stops its reader)."""


class _FramedReader(ReaderAdapter):  # type: ignore[misc]
    """Follows the MQTT framing of everything a client sends, and refuses a packet
    whose remaining length is over the limit as soon as its length is known."""

    def __init__(self, inner: Any, limit: int, refused: Any) -> None:
        self.inner = inner
        self.limit = limit
        self.refused = refused  # (announced size) -> None
        self._body_left = 0
        self._length: tuple[int, int] | None = None  # (value so far, multiplier)

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self.inner.read(n)
        self._follow(data)
        return data

    def feed_eof(self) -> None:
        self.inner.feed_eof()

    def _follow(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - i)
                self._body_left -= step
                i += step
            elif self._length is None:  # the packet's first byte: type and flags
                self._length = (0, 1)
                i += 1
            else:
                value, multiplier = self._length
                byte = data[i]
                i += 1
                value += (byte & 0x7F) * multiplier
                if byte & 0x80:
                    self._length = (value, multiplier * 128)
                    continue
                self._length = None
                if value > self.limit:
                    self.refused(value)
                    raise PacketTooLarge(f"packet of {value} bytes (limit {self.limit})")
                self._body_left = value


class _Replay(ReaderAdapter):  # type: ignore[misc]
    """A packet already read, for amqtt to parse again."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        size = len(self._data) if n < 0 else n
        out, self._data = self._data[:size], self._data[size:]
        return out

    def feed_eof(self) -> None:
        self._data = b""


# Set for one connection (its task) once its CONNECT passed the auth plugins.
_connect_authenticated: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "iotp_connect_authenticated", default=False
)


async def _read_packet(reader: _FramedReader) -> bytes:
    """One whole packet's bytes, the size limit applied by the framed reader."""
    first = await reader.read(1)
    if not first:
        raise NoDataError("no CONNECT")
    header = bytearray(first)
    value, multiplier = 0, 1
    while True:
        byte = await reader.read(1)
        if not byte:
            raise NoDataError("CONNECT cut short")
        header += byte
        value += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
        if multiplier > 128**3:
            raise MQTTError("malformed remaining length")
    body = await reader.read(value) if value else b""
    if len(body) < value:
        raise NoDataError("CONNECT cut short")
    return bytes(header) + body


class _Subscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's topic filter -> subscribers, iterated over a copy (see the module)."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return [(k, list(v)) for k, v in super().items()]


class GuardedBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker with a CONNECT authenticated first and packets size-limited."""

    def __init__(self, config: dict[str, Any], *, max_packet_bytes: int) -> None:
        super().__init__(config)
        self._subscriptions = _Subscriptions()
        self.max_packet_bytes = max_packet_bytes
        self.oversized = 0
        self.refused_connects = 0
        self.retained_refused = 0  # retained deliveries the ACL refused

    def _oversized(self, size: int) -> None:
        self.oversized += 1
        log.warning(
            "MQTT packet of %d bytes refused (limit %d): connection closed",
            size,
            self.max_packet_bytes,
        )

    async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
        framed = _FramedReader(reader, self.max_packet_bytes, self._oversized)
        await super()._client_connected(listener_name, framed, writer)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> Any:
        raw = await _read_packet(reader)
        _handler, probe = await BrokerProtocolHandler.init_from_connect(
            _Replay(raw), writer, self.plugins_manager
        )
        if not await super()._authenticate(probe, None):
            self.refused_connects += 1
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"CONNECT refused: client {probe.client_id!r} not authorised")
        _connect_authenticated.set(True)
        return await super()._initialize_client_session(
            _Replay(raw), writer, remote_address, remote_port
        )

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        if _connect_authenticated.get():  # checked before the session was looked up
            return True
        return bool(await super()._authenticate(session, listener))

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        held = [
            granted
            for holder, granted in self._subscriptions.get(topic_filter, ())
            if holder.client_id == session.client_id
        ]
        if not held:
            return  # another client's subscription (amqtt passes them all at CONNECT)
        handler = self._get_handler(session)
        if handler is None:
            return
        qos = held[0]  # as granted (amqtt passes QoS 0 for the subscriptions it replays)
        sends = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic, Action.RECEIVE):
                self.retained_refused += 1
                continue
            sends.append(
                handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                )
            )
        # Together, as amqtt does: one slow acknowledgement does not hold up the rest,
        # and a client gone meanwhile is its connection's business, not the SUBACK's.
        await asyncio.gather(*sends, return_exceptions=True)


class EmbeddedBroker:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        authority: DeviceAuthority | None = None,
        tls: TlsListener | None = None,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
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
        self._broker = GuardedBroker(config, max_packet_bytes=max_packet_bytes)
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
        return cls(
            host,
            port,
            authority=authority,
            tls=tls,
            max_packet_bytes=settings.mqtt_max_packet_bytes,
        )

    async def start(self) -> None:
        await self._broker.start()
        if self.authority is not None:
            self.authority.start()
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.authority is not None:
            await self.authority.stop()
        await self._broker.shutdown()
