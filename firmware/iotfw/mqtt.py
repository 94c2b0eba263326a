# Asyncio MQTT 3.1.1 client over asyncio streams. Runs on MicroPython's asyncio and
# CPython's asyncio: QoS 0/1 publish with retransmission, subscriptions, keepalive,
# last will, reconnect with capped exponential backoff and jitter.
#
# publish() is a plain function that only queues: one sender task per connection
# does all the writing, so no caller ever blocks on the network. QoS 1 messages
# wait in a bounded queue while the link is down and go out when it is back.
import asyncio

from iotfw import clock, mqttpkt
from iotfw.backoff import Backoff

# The largest packet the device takes in (commands are a few hundred bytes); a
# bigger one is refused before it is buffered, and the connection starts again.
# The receive buffer is this size, allocated once per client: reads go into it, and
# only a whole packet's body is copied out.
MAX_PACKET = 4096
MIN_KEEPALIVE_TICK_MS = 500


class MQTTError(Exception):
    pass


class MQTTRefused(MQTTError):
    """The broker answered CONNACK with a refusal (rc 1..5)."""

    def __init__(self, rc):
        # super(): MicroPython's exception classes have no __init__ to call by name
        super().__init__("connection refused: " + mqttpkt.CONNACK_REASONS.get(rc, str(rc)))
        self.rc = rc


# The device's link's receive buffer, taken when this module loads at boot, while
# the heap is in one piece: after a provisioning exchange over TLS has come and gone
# the heap may hold no single free block of that size any more. The first client of
# that size takes it; any other allocates its own.
_reserved = [bytearray(MAX_PACKET)]


def _receive_buffer(size):
    if _reserved and size == MAX_PACKET:
        return _reserved.pop()
    return bytearray(size)


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=60, will=None, ssl=False, clean_session=True,
                 on_connect=None, on_message=None, on_disconnect=None, backoff=None,
                 max_inflight=20, max_queue=100, ack_timeout=10.0, connect_timeout=10.0,
                 log=None, on_refused=None, max_packet=MAX_PACKET, views=False, rx=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will  # (topic, payload, qos, retain)
        self.ssl = ssl  # False, True or an SSL context (iotfw.tls.client_context)
        self.clean_session = clean_session
        self.on_connect = on_connect  # called (not awaited) after CONNACK
        self.on_message = on_message  # on_message(topic, payload_bytes)
        # views: on_message gets the payload as a view of the receive buffer, valid
        # until it returns (no copy of each message: it parses or copies what it keeps)
        self.views = views
        self.on_disconnect = on_disconnect
        # on_refused(rc) after a refused CONNACK; returning True ends run() (the owner
        # changes the login and calls run() again)
        self.on_refused = on_refused
        self.refused = 0
        self.backoff = backoff or Backoff(base=1.0, cap=60.0)
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self.max_packet = max_packet
        self.too_large = 0
        self.ack_timeout_ms = int(ack_timeout * 1000)
        self.connect_timeout = connect_timeout
        self.log = log
        self.up = asyncio.Event()
        self.subscriptions = []  # [(filter, qos)]
        self.inflight = []  # [[pid, topic, payload, retain, sent_ms, sent]] in order
        self.pending = []  # [(topic, payload, retain)] waiting for a slot or the link
        self.dropped = 0
        self.connects = 0
        self.last_error = None
        self._raw = []  # control packets and QoS 0 publishes waiting for the sender
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._reader = None
        self._writer = None
        self._pid = 0
        self._closing = False
        self._halt = False
        self._last_rx = 0
        self._last_tx = 0
        # rx: a buffer of max_packet bytes lent by an owner that does not use it
        # meanwhile (the device's link lends its own to the provisioning exchange)
        self._rx = rx if rx is not None else _receive_buffer(max_packet)
        self._rxv = memoryview(self._rx)
        self._rs = 0  # the unread bytes are self._rx[self._rs:self._re]
        self._re = 0

    # -- public API ---------------------------------------------------------

    @property
    def receive_buffer(self):
        """What the client reads into; unused while it does not run."""
        return self._rxv

    @property
    def connected(self):
        return self.up.is_set()

    @property
    def closed(self):
        return self._closing

    def subscribe(self, topic_filter, qos=1):
        """Registers a subscription; it is sent on every connect."""
        for i in range(len(self.subscriptions)):
            if self.subscriptions[i][0] == topic_filter:
                self.subscriptions[i] = (topic_filter, qos)
                return
        self.subscriptions.append((topic_filter, qos))
        if self.connected:
            self._queue_raw(mqttpkt.subscribe(self._next_pid(), [(topic_filter, qos)]))

    def publish(self, topic, payload, qos=1, retain=False):
        """Queues a message; never blocks. Returns False if it was dropped.

        QoS 0 messages are dropped while the link is down; QoS 1 messages are kept
        (the oldest is dropped when more than max_queue wait).
        """
        if isinstance(payload, str):
            payload = payload.encode()
        if qos == 0:
            if not self.connected:
                return False
            self._queue_raw(mqttpkt.publish(topic, payload, 0, retain))
            return True
        ok = True
        if len(self.pending) >= self.max_queue:
            self.pending.pop(0)
            self.dropped += 1
            ok = False
        self.pending.append((topic, payload, retain))
        if self.connected:
            self._wake.set()
        return ok

    def unacked(self):
        return len(self.inflight) + len(self.pending)

    async def wait_acked(self, timeout):
        """Waits until every queued QoS 1 message was acknowledged (or timeout)."""
        start = clock.now_ms()
        while self.unacked() and clock.since_ms(start) < timeout * 1000:
            await asyncio.sleep(0.05)
        return not self.unacked()

    async def run(self):
        """Connects and keeps the link up until close() (or until on_refused asks to
        stop, or halt()); never raises. A closed client stays closed until reopen()."""
        self._halt = False
        self._stop = asyncio.Event()
        while not self._closing and not self._halt:
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - any failure means: retry later
                self.last_error = repr(exc)
                self._log("connect to %s:%s failed: %r" % (self.host, self.port, exc))
                await self._drop()
                if isinstance(exc, MQTTRefused):
                    self.refused += 1
                    if self._refused(exc.rc):
                        return
                await self._pause(self.backoff.next_delay())
                continue
            self.backoff.reset()
            try:
                await self._session()
            except Exception as exc:  # noqa: BLE001
                self.last_error = repr(exc)
                if not self._closing and not self._halt:
                    # (closing, the reader fails on its own socket closed under it:
                    # with TLS as MBEDTLS_ERR_SSL_BAD_INPUT_DATA; nothing was lost)
                    self._log("link lost: %r" % (exc,))
            await self._drop()
            if not self._closing and not self._halt:
                await self._pause(self.backoff.next_delay())

    async def close(self, timeout=2.0):
        """Waits up to timeout for unacknowledged messages, then disconnects cleanly."""
        if self.connected:
            await self.wait_acked(timeout)
        self._closing = True
        writer = self._writer
        if writer is not None and self.connected:
            self.up.clear()
            try:
                writer.write(mqttpkt.disconnect())
                await asyncio.wait_for(writer.drain(), 1.0)
            except Exception:  # noqa: BLE001
                pass
        self._abort()
        self._stop.set()

    def reopen(self):
        """After close() and once run() has returned: run() may be called again, with
        nothing left of what was queued before."""
        self._closing = False
        self.inflight = []
        self.pending = []
        self._raw = []

    def kill(self):
        """Drops the TCP connection without DISCONNECT (the broker sends the will)."""
        self._abort()

    def halt(self):
        """Like kill(), and run() returns instead of reconnecting (it may be run again,
        e.g. with another login)."""
        self._halt = True
        self._abort()
        self._stop.set()

    # -- internals ----------------------------------------------------------

    def _refused(self, rc):
        if self.on_refused is None:
            return False
        try:
            return bool(self.on_refused(rc))
        except Exception as exc:  # noqa: BLE001
            self._log("on_refused failed: %r" % (exc,))
            return False

    def _log(self, msg):
        if self.log:
            self.log("mqtt " + self.client_id + ": " + msg)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _queue_raw(self, packet):
        self._raw.append(packet)
        self._wake.set()

    async def _pause(self, seconds):
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _abort(self):
        self.up.clear()
        self._wake.set()
        writer = self._writer
        if writer is not None:
            try:
                writer.close()
                # MicroPython's Stream.close() leaves the socket open (wait_closed()
                # closes it): close it here, so a blocked read ends now
                sock = getattr(writer, "s", None)
                if sock is not None:
                    sock.close()
            except Exception:  # noqa: BLE001
                pass

    async def _drop(self):
        was_up = self.up.is_set()
        self.up.clear()
        writer = self._writer
        self._writer = None
        self._reader = None
        self._raw = []
        if writer is not None:
            try:
                writer.close()
                await writer.wait_closed()
            except Exception:  # noqa: BLE001
                pass
        if was_up and self.on_disconnect:
            try:
                self.on_disconnect()
            except Exception as exc:  # noqa: BLE001
                self._log("on_disconnect failed: %r" % (exc,))

    async def _connect(self):
        if self.ssl:
            opener = asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        else:
            opener = asyncio.open_connection(self.host, self.port)
        reader, writer = await asyncio.wait_for(opener, self.connect_timeout)
        self._reader = reader
        self._writer = writer
        self._rs = self._re = 0
        writer.write(mqttpkt.connect(self.client_id, self.keepalive, self.user,
                                     self.password, self.will, self.clean_session))
        await writer.drain()
        self._last_tx = clock.now_ms()
        packet = await asyncio.wait_for(self._read_packet(), self.connect_timeout)
        if packet["type"] != mqttpkt.CONNACK:
            raise MQTTError("expected CONNACK")
        if packet["rc"] != 0:
            raise MQTTRefused(packet["rc"])
        self.connects += 1
        self._last_rx = clock.now_ms()

    async def _read_packet(self):
        while True:
            packet = self._next()
            if packet is not None:
                return packet
            await self._fill()

    def _next(self):
        """The next whole packet in the receive buffer, parsed, or None."""
        rs, re = self._rs, self._re
        if re - rs < 2:
            return None
        view = self._rxv[rs:re]
        try:
            got = mqttpkt.frame(view, self.max_packet)
        except mqttpkt.PacketTooLarge:
            self.too_large += 1
            raise
        if got is None:
            return None
        head, end = got
        self._rs = rs + end
        return mqttpkt.parse(view[0], view[head:end])

    async def _fill(self):
        """Reads what the socket has into the receive buffer, after its unread bytes."""
        rx = self._rx
        if self._rs == self._re:
            self._rs = self._re = 0
        elif self._re == len(rx):
            # the start of a packet sits at the end: move it to the front (it fits,
            # _next() refused it otherwise)
            rest = bytes(self._rxv[self._rs:self._re])
            rx[:len(rest)] = rest
            self._rs, self._re = 0, len(rest)
        room = self._rxv[self._re:]
        readinto = getattr(self._reader, "readinto", None)
        if readinto is not None:  # MicroPython's streams: straight into the buffer
            got = await readinto(room)
            while got is None:  # TLS: a record not whole yet (readinto does not wait)
                got = await readinto(room)
        else:  # CPython's StreamReader has no readinto
            data = await self._reader.read(len(room))
            got = len(data)
            room[:got] = data
        if not got:
            raise MQTTError("connection closed")
        self._re += got
        self._last_rx = clock.now_ms()

    async def _session(self):
        self._raw = []
        if self.subscriptions:
            self._raw.append(mqttpkt.subscribe(self._next_pid(), self.subscriptions))
        # unacknowledged messages of the previous connection go first, again
        for entry in self.inflight:
            entry[5] = False
        self.up.set()
        self._wake.set()
        sender = asyncio.create_task(self._guarded(self._sender()))
        pinger = asyncio.create_task(self._guarded(self._keepalive()))
        try:
            if self.on_connect:
                # what on_connect publishes (birth, info) goes before older messages
                queued = self.pending
                self.pending = []
                try:
                    self.on_connect()
                except Exception as exc:  # noqa: BLE001
                    self._log("on_connect failed: %r" % (exc,))
                self.pending.extend(queued)
                while len(self.pending) > self.max_queue:
                    self.pending.pop(len(self.pending) - len(queued))
                    self.dropped += 1
            await self._read_loop()
        finally:
            self.up.clear()
            sender.cancel()
            pinger.cancel()

    async def _guarded(self, task):
        """Runs one of the link's tasks; if it fails (no heap for a packet, say) the
        link ends and the run loop connects again: a task that died silently would
        leave a link that looks up and sends nothing. Unsent messages stay in
        flight and go again on the new connection."""
        try:
            await task
        except Exception as exc:  # noqa: BLE001
            self.last_error = repr(exc)
            self._log("link task failed: %r" % (exc,))
            self._abort()

    async def _sender(self):
        writer = self._writer
        while self.up.is_set():
            await self._wake.wait()
            self._wake.clear()
            if not self.up.is_set():
                break
            out = self._raw
            self._raw = []
            now = clock.now_ms()
            for entry in self.inflight:
                if not entry[5]:
                    # a retransmission after a reconnect carries the DUP flag
                    out.append(mqttpkt.publish(entry[1], entry[2], 1, entry[3], entry[0],
                                               True))
                    entry[4] = now
                    entry[5] = True
            while self.pending and len(self.inflight) < self.max_inflight:
                topic, payload, retain = self.pending.pop(0)
                pid = self._next_pid()
                self.inflight.append([pid, topic, payload, retain, now, True])
                out.append(mqttpkt.publish(topic, payload, 1, retain, pid))
            if not out:
                continue
            try:
                writer.write(b"".join(out))
                await writer.drain()
            except Exception as exc:  # noqa: BLE001 - the run loop reconnects
                self.last_error = repr(exc)
                self._abort()
                return
            self._last_tx = now

    async def _read_loop(self):
        while True:
            packet = self._next()
            while packet is not None:
                self._handle(packet)
                packet = self._next()
            if not self.up.is_set():
                raise MQTTError("link closed")
            await self._fill()

    def _handle(self, packet):
        ptype = packet["type"]
        if ptype == mqttpkt.PUBACK:
            pid = packet["pid"]
            inflight = self.inflight
            for i in range(len(inflight)):
                if inflight[i][0] == pid:
                    inflight.pop(i)
                    break
            if self.pending:
                self._wake.set()
        elif ptype == mqttpkt.PUBLISH:
            if packet["qos"] == 1:
                self._queue_raw(mqttpkt.puback(packet["pid"]))
            elif packet["qos"] == 2:
                self._queue_raw(mqttpkt.pubrec(packet["pid"]))
            topic = packet["topic"]
            # deliver only what we subscribed to: brokers were seen doing otherwise
            for flt, _ in self.subscriptions:
                if mqttpkt.topic_matches(flt, topic):
                    if self.on_message:
                        payload = packet["payload"]
                        if not self.views:
                            payload = bytes(payload)
                        try:
                            self.on_message(topic, payload)
                        except Exception as exc:  # noqa: BLE001
                            self._log("on_message failed: %r" % (exc,))
                    return
            self._log("ignored message on unsubscribed topic " + topic)
        elif ptype == mqttpkt.PUBREL:
            self._queue_raw(mqttpkt.pubcomp(packet["pid"]))
        elif ptype == mqttpkt.SUBACK:
            if 0x80 in packet["granted"]:
                raise MQTTError("subscription refused")

    async def _keepalive(self):
        keepalive_ms = self.keepalive * 1000
        ack_ms = self.ack_timeout_ms
        while self.up.is_set():
            now = clock.now_ms()
            if clock.diff_ms(now, self._last_rx) > keepalive_ms * 3 // 2:
                self._log("keepalive timeout")
                self._abort()
                return
            if clock.diff_ms(now, self._last_tx) >= keepalive_ms // 2:
                self._queue_raw(mqttpkt.pingreq())
                self._last_tx = now
            # sleep until the next deadline: a ping, the broker's silence, an ack
            wait = min(keepalive_ms // 2 - clock.diff_ms(now, self._last_tx),
                       keepalive_ms * 3 // 2 - clock.diff_ms(now, self._last_rx))
            resend = False
            for entry in self.inflight:
                if entry[5]:
                    left = ack_ms - clock.diff_ms(now, entry[4])
                    if left <= 0:
                        entry[5] = False
                        resend = True
                    elif left < wait:
                        wait = left
            if resend:
                self._wake.set()
            await asyncio.sleep(max(wait, MIN_KEEPALIVE_TICK_MS) / 1000)
