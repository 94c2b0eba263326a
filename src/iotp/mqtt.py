"""The platform's MQTT connection (worker and API): gmqtt, chosen by measurement
(bench/RESULTS.md), wrapped so the rest of the code never touches it directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

from iotp.settings import MqttUrl

log = logging.getLogger(__name__)

RECONNECT_INTERVAL_SECONDS = 1.0
RECONNECT_INTERVAL_MAX_SECONDS = 10.0
KEEPALIVE_SECONDS = 30

# Called synchronously for every message. It returns None when the message is fully
# handled, or an awaitable that completes when it is (e.g. when its data is stored).
MessageHandler = Callable[[str, bytes, int, bool], Awaitable[None] | None]


class MqttLink:
    """One client connection with an explicit reconnect loop.

    ``handler`` is awaited for each message; with ``ack_after_handler`` a QoS 1
    message's PUBACK is sent only when the handler has returned (e.g. once the data is
    stored), so a crash before then makes the broker redeliver it.
    """

    def __init__(
        self,
        url: MqttUrl,
        *,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]],
        handler: MessageHandler,
        clean_session: bool = False,
        ack_after_handler: bool = True,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self._handler = handler
        self.connected = asyncio.Event()
        self._client: Any = gmqtt.Client(
            client_id,
            clean_session=clean_session,
            optimistic_acknowledgement=not ack_after_handler,
        )
        self._client.set_config(
            {"reconnect_retries": -1, "reconnect_delay": RECONNECT_INTERVAL_SECONDS}
        )
        if url.username:
            self._client.set_auth_credentials(url.username, url.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        if ack_after_handler:
            # gmqtt would wrap every message in a Task to delay its PUBACK; at tens of
            # thousands of messages per second that Task is the largest cost. Instead the
            # handler runs inline and the PUBACK rides on the future it returns (for
            # telemetry: one future per stored batch). Measured in bench/RESULTS.md.
            self._client._package_handler._handle_qos_1_publish_packet = self._on_qos1
        self._closing = False
        self._generation = 0
        self._background: set[asyncio.Future[None]] = set()
        self._acks_waiting: dict[asyncio.Future[None], list[int]] = {}
        # SUBSCRIBE packets sent on the current connection whose SUBACK has not come yet.
        self._subacks: dict[int, asyncio.Future[None]] = {}
        # publish_confirmed: the broker's PUBACK for our own QoS 1 publishes. gmqtt has
        # no public hook; removing a message from its resend store marks the PUBACK.
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        package_handler: Any = self._client._package_handler
        self._forget_stored: Callable[[int], None] = package_handler._remove_message_from_queue
        package_handler._remove_message_from_queue = self._on_puback

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    def _on_connect(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        self._generation += 1
        log.info("MQTT connected to %s as %s", self.url, self.client_id)
        for topic, qos in self.subscriptions:
            self._send_subscribe(topic, qos)
        self.connected.set()

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self.connected.clear()
        # No SUBACK comes for these any more; the next connection subscribes anew.
        for waiter in self._subacks.values():
            waiter.cancel()
        self._subacks.clear()
        if not self._closing:
            log.warning("MQTT connection to %s lost; reconnecting", self.url)

    def _dispatch(
        self, topic: str, payload: bytes, qos: int, properties: Any
    ) -> asyncio.Future[None] | None:
        retain = bool(properties.get("retain", 0)) if isinstance(properties, dict) else False
        result = self._handler(topic, payload, qos, retain)
        if result is None:
            return None
        future: asyncio.Future[None] = asyncio.ensure_future(result)
        if not isinstance(result, asyncio.Future):
            self._background.add(future)
            future.add_done_callback(self._background.discard)
        return future

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        self._dispatch(topic, payload, qos, properties)
        return 0

    def _on_qos1(self, mid: int, payload: bytes, topic: str, properties: Any) -> None:
        try:
            future = self._dispatch(topic, payload, 1, properties)
        except Exception:
            log.exception("handler failed for %r; not acknowledged", topic)
            return
        if future is None:
            self._write_pubacks((mid,))
            return
        mids = self._acks_waiting.get(future)
        if mids is None:
            # One callback per future (for telemetry: per batch), however many messages.
            mids = self._acks_waiting[future] = []
            future.add_done_callback(partial(self._acks_due, self._generation))
        mids.append(mid)

    def _acks_due(self, generation: int, future: asyncio.Future[None]) -> None:
        mids = self._acks_waiting.pop(future, ())
        if future.cancelled() or future.exception() is not None:
            return  # not acknowledged: the broker redelivers after reconnecting
        # PUBACKs for messages of an earlier connection could acknowledge other messages
        # that reuse their ids; the broker redelivers the old ones anyway.
        if generation == self._generation and self.is_connected:
            self._write_pubacks(mids)

    def _write_pubacks(self, mids: Sequence[int]) -> None:
        # MQTT 3.1.1 PUBACK: type 4, remaining length 2, packet id. One write for all.
        packets = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
        self._client._connection._protocol.write_data(packets)

    def _send_subscribe(self, topic: str, qos: int) -> None:
        mid = self._client.subscribe(topic, qos=qos)
        if isinstance(mid, int):
            self._subacks[mid] = asyncio.get_running_loop().create_future()

    def _on_subscribe(self, client: Any, mid: int, granted: Sequence[int], properties: Any) -> None:
        waiter = self._subacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if any(q >= 0x80 for q in granted):
            log.warning("MQTT broker %s refused a subscription (SUBACK %s)", self.url, granted)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now if connected (and after every reconnect). Returns at once; await
        ``until_subscribed`` to know the broker has acknowledged it."""
        if (topic, qos) not in self.subscriptions:
            self.subscriptions.append((topic, qos))
        if self.is_connected:
            self._send_subscribe(topic, qos)

    async def until_subscribed(self) -> None:
        """Return once the link is connected and the broker has acknowledged (SUBACK)
        every subscription sent so far: messages published from then on reach us. Waits
        through reconnects; callers bound it with a timeout."""
        while True:
            if not self.is_connected:
                await self.connected.wait()
                continue
            pending = [w for w in self._subacks.values() if not w.done()]
            if not pending:
                return
            await asyncio.wait(pending)  # a disconnect cancels them: then look again

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions = [s for s in self.subscriptions if s[0] != topic]
        if self.is_connected:
            self._client.unsubscribe(topic)

    async def connect(self, stop: asyncio.Event | None = None) -> None:
        """Connect, retrying with capped backoff until it works or ``stop`` is set."""
        delay = RECONNECT_INTERVAL_SECONDS
        while True:
            try:
                await self._client.connect(
                    self.url.host,
                    self.url.port,
                    ssl=self.url.tls,
                    keepalive=KEEPALIVE_SECONDS,
                    version=MQTTv311,
                )
                return
            except (TimeoutError, OSError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
                log.warning("MQTT connect to %s failed (%s); retry in %.0f s", self.url, exc, delay)
            if stop is not None:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    raise asyncio.CancelledError
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_INTERVAL_MAX_SECONDS)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        # While connected or reconnecting, gmqtt keeps QoS 1 messages to resend; once we
        # have closed the link for good there is nobody to send them to.
        if self._closing:
            log.debug("link closed; not publishing to %s", topic)
            return
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def publish_confirmed(self, topic: str, payload: bytes | str) -> asyncio.Future[None]:
        """QoS 1 publish whose future completes when the broker has acknowledged it
        (PUBACK): only then is the message the broker's. While the link is down gmqtt
        keeps it and resends it after reconnecting; the caller bounds the wait. Fails
        at once when the link is not connected or closed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing or not self.is_connected:
            future.set_exception(ConnectionError("MQTT link is not connected"))
            return future
        message = gmqtt.Message(topic, payload, qos=1)
        mid, package = self._client._connection.publish(message)
        self._client._persistent_storage.push_message(mid, package)
        previous = self._pubacks.pop(mid, None)  # an id reused after its wait was given up
        if previous is not None and not previous.done():
            previous.set_exception(ConnectionError("packet id reused before its PUBACK"))
        self._pubacks[mid] = future
        return future

    def _on_puback(self, mid: int) -> None:
        self._forget_stored(mid)
        future = self._pubacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def close(self) -> None:
        self._closing = True
        try:
            await self._client.disconnect()
        except Exception:
            log.debug("MQTT disconnect failed", exc_info=True)
        self.connected.clear()


ANONYMOUS_PROBE_TIMEOUT_SECONDS = 5.0


async def accepts_anonymous(url: MqttUrl) -> bool:
    """Does the broker at ``url`` accept a CONNECT without username and password?"""
    client: Any = gmqtt.Client(f"iotp.anonymous-probe.{uuid.uuid4().hex[:8]}")
    client.set_config({"reconnect_retries": 0})
    handler_log = logging.getLogger("gmqtt.mqtt.handler")
    level = handler_log.level
    handler_log.setLevel(logging.CRITICAL)  # the refusal hoped for is not an error
    try:
        await asyncio.wait_for(
            client.connect(url.host, url.port, ssl=url.tls, version=MQTTv311),
            ANONYMOUS_PROBE_TIMEOUT_SECONDS,
        )
    except (TimeoutError, OSError, gmqtt.mqtt.handler.MQTTConnectError):
        return False
    finally:
        handler_log.setLevel(level)
    accepted = bool(client.is_connected)
    with contextlib.suppress(Exception):
        await client.disconnect()
    return accepted
