"""The worker's RabbitMQ input: competing consumers on one durable queue.

RabbitMQ has no MQTT shared subscriptions: several workers subscribed to ``devices/#``
through its MQTT plugin would each get (and store) every message. Instead every worker
consumes the same durable queue (``IOTP_AMQP_QUEUE``, quorum by default) bound to the
``amq.topic`` exchange, where the MQTT plugin publishes whatever devices send, with the
MQTT topic as routing key and ``/`` and ``.`` swapped (``devices/A1/data`` ->
``devices.A1.data``). RabbitMQ hands each message to one consumer: the load is shared and
nothing is stored twice. The routing key is turned back into the MQTT topic, and the
message goes through the same handler as on MQTT (``Ingestor.handle``).

Durability is the same as PUBACK-after-commit on MQTT: a delivery is acknowledged only
when the awaitable its handler returned completes (for telemetry: once its batch is
committed). A worker that dies leaves its unacknowledged deliveries to RabbitMQ, which
redelivers them to another worker (or to this one after a restart); rows already
stored are absorbed by the telemetry table's (device, ts, seq) key.

Acknowledgements are cumulative: ``basic.ack(multiple=True)`` up to the first delivery
still pending, at most once per event-loop pass (a batch of 2,000 messages costs one
ack frame). Deliveries complete out of order (a new device's first message waits for
its registration while later batches commit), so the watermark never passes one that
is not done. The prefetch window bounds what one worker holds unacknowledged; it must
exceed a batch so the next batch fills while the last one commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage
from yarl import URL

log = logging.getLogger(__name__)

EXCHANGE = "amq.topic"  # where RabbitMQ's MQTT plugin publishes
RECONNECT_INTERVAL_SECONDS = 1.0
RECONNECT_INTERVAL_MAX_SECONDS = 10.0
MAX_PREFETCH = 65535

# Same contract as iotp.mqtt.MessageHandler: (topic, payload, qos, retain) -> None when
# the message is fully handled, or an awaitable that completes when it is.
MessageHandler = Callable[[str, bytes, int, bool], Awaitable[None] | None]

_SWAP = str.maketrans("./", "/.")


def routing_key_to_topic(routing_key: str) -> str:
    """``devices.A1.data`` -> ``devices/A1/data`` (the MQTT plugin's mapping, reversed)."""
    return routing_key.translate(_SWAP)


def topic_filter_to_binding(topic_filter: str) -> str:
    """An MQTT topic filter as an AMQP topic binding key (``+`` -> ``*``, ``#`` stays)."""
    return ".".join(
        "*" if level == "+" else level.replace(".", "/") for level in topic_filter.split("/")
    )


def safe_url(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


class AmqpSource:
    """Consumes ``queue`` (declared durable, bound to ``bindings`` on amq.topic) and
    reconnects by itself; ``handler`` sees MQTT topics."""

    def __init__(
        self,
        url: str,
        *,
        queue: str,
        bindings: Sequence[str],
        handler: MessageHandler,
        prefetch: int,
        queue_type: str = "quorum",
    ) -> None:
        self.url = url
        self.queue = queue
        self.bindings = list(bindings)  # MQTT topic filters
        self.prefetch = max(1, min(prefetch, MAX_PREFETCH))
        self.queue_type = queue_type
        self._handler = handler
        self.connected = asyncio.Event()
        self.delivered = 0
        self.redelivered = 0
        self.handler_errors = 0
        self._closing = False
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._generation = 0
        self._runner: asyncio.Task[None] | None = None
        # Unacknowledged deliveries in delivery order, those already done, and the
        # deliveries waiting on each handler awaitable (one entry per telemetry batch).
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._nacked: set[int] = set()  # done, but settled by a nack: never acked
        self._waiting: dict[asyncio.Future[None], list[int]] = {}
        self._flush_scheduled = False
        self._background: set[asyncio.Future[Any]] = set()

    def __str__(self) -> str:
        return f"{safe_url(self.url)} queue {self.queue}"

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    # ---- lifecycle -------------------------------------------------------------------

    async def connect(self, stop: asyncio.Event | None = None) -> None:
        """Start consuming (and keep reconnecting in the background); returns once the
        first consumer is set up, or raises CancelledError if ``stop`` is set first."""
        self._runner = asyncio.create_task(self._run(), name="amqp-source")
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.connected.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if not self.is_connected:
            raise asyncio.CancelledError

    async def stop_consuming(self) -> None:
        """Ask RabbitMQ for no more deliveries (those in flight are still handled)."""
        channel, tag = self._channel, self._consumer_tag
        self._consumer_tag = None
        if channel is not None and tag is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.basic_cancel(tag), 5)

    async def close(self) -> None:
        """Send the acknowledgements due, then close; RabbitMQ requeues the rest."""
        for _ in range(3):  # the done callbacks of the last batches, then their flush
            await asyncio.sleep(0)
        self._flush_acks()
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self.connected.clear()

    async def _run(self) -> None:
        delay = RECONNECT_INTERVAL_SECONDS
        while not self._closing:
            try:
                connection = await aio_pika.connect(self.url, timeout=10)
            except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
                log.warning("AMQP connect to %s failed (%s); retry in %.0f s", self, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_INTERVAL_MAX_SECONDS)
                continue
            self._connection = connection
            try:
                closing = await self._consume(connection)
                delay = RECONNECT_INTERVAL_SECONDS
                log.info("AMQP consuming %s (prefetch %d)", self, self.prefetch)
                await closing
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever went wrong
                log.warning("AMQP link to %s failed: %s: %s", self, type(exc).__name__, exc)
            finally:
                self._lost()
                with contextlib.suppress(Exception):
                    await asyncio.shield(connection.close())
            if not self._closing:
                log.warning("AMQP connection to %s lost; reconnecting", self)
                await asyncio.sleep(delay)

    async def _consume(self, connection: aio_pika.abc.AbstractConnection) -> asyncio.Future[Any]:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(
            self.queue, durable=True, arguments={"x-queue-type": self.queue_type}
        )
        for topic_filter in self.bindings:
            await queue.bind(EXCHANGE, routing_key=topic_filter_to_binding(topic_filter))
        raw = await channel.get_underlay_channel()
        self._generation += 1
        self._pending.clear()
        self._done.clear()
        self._nacked.clear()
        self._channel = raw
        # aiormq directly: aio-pika's consumer wraps each delivery in an IncomingMessage,
        # a Future and a call_soon on top of aiormq's own Task (bench/RESULTS.md).
        ok = await raw.basic_consume(queue.name, self._on_delivery, no_ack=False)
        self._consumer_tag = ok.consumer_tag
        self.connected.set()
        return raw.closing

    def _lost(self) -> None:
        self.connected.clear()
        self._channel = None
        self._consumer_tag = None
        # The broker requeues every unacknowledged delivery of the closed channel; the
        # tags mean nothing on the next one (the generation check drops their acks).
        self._pending.clear()
        self._done.clear()
        self._nacked.clear()

    # ---- the hot path ----------------------------------------------------------------

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        delivery: Any = message.delivery  # spec.Basic.Deliver
        tag: int = delivery.delivery_tag
        self._pending.append(tag)
        self.delivered += 1
        if delivery.redelivered:
            self.redelivered += 1
        topic = routing_key_to_topic(delivery.routing_key or "")
        try:
            result = self._handler(topic, message.body, 1, False)
        except Exception:
            # A bug, not bad input (the handler counts that itself): dropped, not
            # requeued, so it cannot come back forever.
            self.handler_errors += 1
            log.exception("handler failed for %r; message dropped", topic)
            self._settle(self._generation, (tag,), reject=True)
            return
        if result is None:
            self._done.add(tag)
            self._schedule_flush()
            return
        future: asyncio.Future[None] = asyncio.ensure_future(result)
        tags = self._waiting.get(future)
        if tags is None:
            # One callback per future (for telemetry: per batch), however many messages.
            tags = self._waiting[future] = []
            future.add_done_callback(partial(self._completed, self._generation))
        tags.append(tag)

    def _completed(self, generation: int, future: asyncio.Future[None]) -> None:
        tags = self._waiting.pop(future, [])
        if generation != self._generation:
            return  # delivered on a channel that is gone: RabbitMQ requeued them
        failed = future.cancelled() or future.exception() is not None
        if failed:
            # Not stored: back to the queue, for this worker or another one.
            self._settle(generation, tags, reject=False)
            return
        self._done.update(tags)
        self._schedule_flush()

    def _settle(self, generation: int, tags: Sequence[int], *, reject: bool) -> None:
        channel = self._channel
        if channel is None or generation != self._generation:
            return
        for tag in tags:
            self._spawn(channel.basic_nack(tag, requeue=not reject, wait=False))
            self._nacked.add(tag)
            self._done.add(tag)  # settled: the watermark may pass it
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        pending, done, nacked = self._pending, self._done, self._nacked
        last = 0
        while pending and pending[0] in done:
            tag = pending.popleft()
            done.discard(tag)
            if nacked and tag in nacked:
                # RabbitMQ refuses (closes the channel) an ack whose own tag is not
                # outstanding, even with multiple=True: end on an unsettled one.
                nacked.discard(tag)
                continue
            last = tag
        channel = self._channel
        if last and channel is not None and not channel.is_closed:
            self._spawn(channel.basic_ack(last, multiple=True, wait=False))

    def _spawn(self, coro: Awaitable[None]) -> None:
        future = asyncio.ensure_future(coro)
        self._background.add(future)
        future.add_done_callback(self._background_done)

    def _background_done(self, future: asyncio.Future[Any]) -> None:
        self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.debug("AMQP ack failed: %s", future.exception())
