# MQTT 3.1.1 packet encoding and decoding. Pure functions on bytes, no I/O, so the
# same code is tested on CPython and MicroPython.

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x60
PUBCOMP = 0x70
SUBSCRIBE = 0x80
SUBACK = 0x90
UNSUBSCRIBE = 0xA0
UNSUBACK = 0xB0
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

MAX_REMAINING = 268435455

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MQTTProtocolError(Exception):
    pass


def _b(value):
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def encode_length(n):
    if n < 0 or n > MAX_REMAINING:
        raise MQTTProtocolError("remaining length out of range")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_length(data, offset=0):
    """Returns (length, bytes_used) or None if data does not yet hold the whole field."""
    mult = 1
    value = 0
    used = 0
    while True:
        if offset + used >= len(data):
            return None
        byte = data[offset + used]
        used += 1
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, used
        mult <<= 7
        if used >= 4:
            raise MQTTProtocolError("malformed remaining length")


def _str(s):
    raw = _b(s)
    if len(raw) > 65535:
        raise MQTTProtocolError("string too long")
    return bytes((len(raw) >> 8, len(raw) & 0xFF)) + raw


def _u16(n):
    return bytes(((n >> 8) & 0xFF, n & 0xFF))


def _packet(first, body):
    return bytes((first,)) + encode_length(len(body)) + body


def connect(client_id, keepalive=60, user=None, password=None, will=None,
            clean_session=True):
    """will: (topic, payload, qos, retain) or None."""
    flags = 0
    if clean_session:
        flags |= 0x02
    payload = _str(client_id)
    if will:
        topic, message, qos, retain = will
        flags |= 0x04 | ((qos & 3) << 3)
        if retain:
            flags |= 0x20
        payload += _str(topic) + _str(message)
    if user is not None and user != "":
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    body = _str("MQTT") + bytes((4, flags)) + _u16(keepalive) + payload
    return _packet(CONNECT, body)


def publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    first = PUBLISH | ((qos & 3) << 1)
    if retain:
        first |= 0x01
    if dup:
        first |= 0x08
    body = _str(topic)
    if qos:
        if not 0 < pid < 65536:
            raise MQTTProtocolError("packet id required for qos > 0")
        body += _u16(pid)
    body += _b(payload)
    return _packet(first, body)


def puback(pid):
    return bytes((PUBACK, 2)) + _u16(pid)


def pubrec(pid):
    return bytes((PUBREC, 2)) + _u16(pid)


def pubcomp(pid):
    return bytes((PUBCOMP, 2)) + _u16(pid)


def subscribe(pid, topics):
    """topics: list of (filter, qos)."""
    body = _u16(pid)
    for flt, qos in topics:
        body += _str(flt) + bytes((qos & 3,))
    return _packet(SUBSCRIBE | 0x02, body)


def pingreq():
    return bytes((PINGREQ, 0))


def disconnect():
    return bytes((DISCONNECT, 0))


def parse(first, body):
    """Decodes one packet from its first byte and body (remaining bytes).

    Returns a dict with at least "type"; raises MQTTProtocolError if malformed.
    """
    ptype = first & 0xF0
    # body may be a memoryview of the receive buffer: read in place, and only a
    # PUBLISH's topic is copied out (its payload is left to the client: the buffer
    # is reused)
    if ptype == CONNACK:
        if len(body) != 2:
            raise MQTTProtocolError("bad CONNACK")
        return {"type": CONNACK, "session_present": bool(body[0] & 1), "rc": body[1]}
    if ptype == PUBLISH:
        qos = (first >> 1) & 3
        if qos == 3:
            raise MQTTProtocolError("bad qos")
        if len(body) < 2:
            raise MQTTProtocolError("bad PUBLISH")
        tlen = (body[0] << 8) | body[1]
        pos = 2 + tlen
        if len(body) < pos:
            raise MQTTProtocolError("bad PUBLISH topic")
        try:
            topic = bytes(body[2:pos]).decode()
        except UnicodeError:
            raise MQTTProtocolError("topic not utf-8")
        pid = 0
        if qos:
            if len(body) < pos + 2:
                raise MQTTProtocolError("bad PUBLISH packet id")
            pid = (body[pos] << 8) | body[pos + 1]
            pos += 2
        # the payload as body holds it: a view of the receive buffer stays a view
        return {"type": PUBLISH, "topic": topic, "payload": body[pos:], "qos": qos,
                "retain": bool(first & 1), "dup": bool(first & 8), "pid": pid}
    if ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        if len(body) != 2:
            raise MQTTProtocolError("bad ack packet")
        return {"type": ptype, "pid": (body[0] << 8) | body[1]}
    if ptype == SUBACK:
        if len(body) < 3:
            raise MQTTProtocolError("bad SUBACK")
        return {"type": SUBACK, "pid": (body[0] << 8) | body[1], "granted": list(body[2:])}
    if ptype in (PINGRESP, PINGREQ, DISCONNECT):
        return {"type": ptype}
    raise MQTTProtocolError("unexpected packet type 0x%02x" % ptype)


class PacketTooLarge(ValueError):
    pass


def frame(buffer, max_size=None):
    """Where the first packet in buffer ends, without copying it: (header size, end),
    or None if buffer does not hold all of it yet. Raises PacketTooLarge as soon as
    the header announces more than max_size bytes."""
    if len(buffer) < 2:
        return None
    got = decode_length(buffer, 1)
    if got is None:
        return None
    length, used = got
    end = 1 + used + length
    if max_size is not None and end > max_size:
        raise PacketTooLarge("packet of %d bytes (at most %d)" % (end, max_size))
    if end > len(buffer):
        return None
    return 1 + used, end


def take(buffer, max_size=None):
    """Takes one complete packet off the front of buffer.

    Returns (first_byte, body, rest) or None if buffer holds no complete packet.
    Raises PacketTooLarge as soon as the header announces more than max_size bytes.
    """
    got = frame(buffer, max_size)
    if got is None:
        return None
    head, end = got
    return buffer[0], bytes(buffer[head:end]), buffer[end:]


def split(buffer):
    """Splits all complete packets off the front of buffer.

    Returns (packets, rest) where packets is a list of (first_byte, body).
    """
    packets = []
    while True:
        got = take(buffer)
        if got is None:
            return packets, buffer
        packets.append((got[0], got[1]))
        buffer = got[2]


def topic_matches(flt, topic):
    """MQTT topic filter matching with + and # wildcards."""
    fparts = flt.split("/")
    tparts = topic.split("/")
    for i, part in enumerate(fparts):
        if part == "#":
            return True
        if i >= len(tparts):
            return False
        if part != "+" and part != tparts[i]:
            return False
    return len(fparts) == len(tparts)
