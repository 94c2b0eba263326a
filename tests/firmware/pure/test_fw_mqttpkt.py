from fwtest_helpers import raises
from iotfw import mqttpkt


def test_remaining_length_round_trip():
    for n in (0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455):
        enc = mqttpkt.encode_length(n)
        assert mqttpkt.decode_length(enc) == (n, len(enc))
    assert mqttpkt.encode_length(127) == b"\x7f"
    assert mqttpkt.encode_length(128) == b"\x80\x01"
    assert mqttpkt.encode_length(321) == b"\xc1\x02"
    raises(mqttpkt.MQTTProtocolError, mqttpkt.encode_length, 268435456)
    assert mqttpkt.decode_length(b"\x80") is None
    raises(mqttpkt.MQTTProtocolError, mqttpkt.decode_length, b"\xff\xff\xff\xff\x01")


def test_connect_packet_bytes():
    pkt = mqttpkt.connect("dev1", keepalive=60)
    assert pkt == b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1"
    pkt = mqttpkt.connect("A", 30, "u", "p", ("devices/A/status", b"offline", 1, True))
    # flags: user 0x80, password 0x40, will retain 0x20, will qos1 0x08, will 0x04, clean 0x02
    assert pkt[9] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    assert pkt.endswith(b"\x00\x10devices/A/status\x00\x07offline\x00\x01u\x00\x01p")
    got = mqttpkt.decode_length(pkt, 1)
    assert got[0] == len(pkt) - 1 - got[1]


def test_publish_encode_parse():
    pkt = mqttpkt.publish("a/b", b"hi", qos=1, retain=True, pid=10)
    assert pkt == b"\x33\x09\x00\x03a/b\x00\x0ahi"
    first, body, rest = mqttpkt.take(pkt + b"\xd0")
    assert rest == b"\xd0"
    msg = mqttpkt.parse(first, body)
    assert msg["topic"] == "a/b"
    assert msg["payload"] == b"hi"
    assert msg["qos"] == 1
    assert msg["pid"] == 10
    assert msg["retain"]
    assert not msg["dup"]
    dup = mqttpkt.publish("a/b", b"hi", qos=1, pid=10, dup=True)
    assert dup[0] == 0x3A
    q0 = mqttpkt.publish("t", "x")
    assert q0 == b"\x30\x04\x00\x01tx"
    raises(mqttpkt.MQTTProtocolError, mqttpkt.publish, "t", b"x", 1)


def test_parse_reads_a_view_of_the_receive_buffer_and_copies_only_the_topic():
    # as the client parses: a memoryview into its buffer, at an offset
    pkt = mqttpkt.publish("a/b", b"hello", qos=1, pid=7)
    buf = bytearray(b"..") + bytearray(pkt) + bytearray(b"\x90\x03\x00\x05\x01")
    view = memoryview(buf)
    head, end = mqttpkt.frame(view[2:])
    msg = mqttpkt.parse(view[2], view[2 + head:2 + end])
    assert (msg["topic"], bytes(msg["payload"]), msg["pid"]) == ("a/b", b"hello", 7)
    assert isinstance(msg["payload"], memoryview)  # not copied: the client decides
    buf[2:2 + end] = b"\x00" * end  # the buffer is reused for the next packet
    assert msg["topic"] == "a/b"
    assert bytes(msg["payload"]) == b"\x00" * 5
    start = 2 + end
    suback = mqttpkt.parse(view[start], view[start + 2:start + 5])
    assert suback["pid"] == 5 and suback["granted"] == [1]
    assert mqttpkt.parse(0x20, memoryview(bytearray(b"\x01\x00")))["session_present"]


def test_large_publish_uses_multibyte_length():
    payload = b"x" * 300
    pkt = mqttpkt.publish("t", payload, qos=0)
    assert pkt[1:3] == mqttpkt.encode_length(303)
    first, body, rest = mqttpkt.take(pkt)
    assert mqttpkt.parse(first, body)["payload"] == payload
    assert rest == b""
    assert mqttpkt.take(pkt[:-1]) is None


def test_control_packets():
    assert mqttpkt.puback(258) == b"\x40\x02\x01\x02"
    assert mqttpkt.pingreq() == b"\xc0\x00"
    assert mqttpkt.disconnect() == b"\xe0\x00"
    sub = mqttpkt.subscribe(5, [("devices/X/commands", 1)])
    assert sub == b"\x82\x17\x00\x05\x00\x12devices/X/commands\x01"
    assert mqttpkt.parse(0x20, b"\x00\x00") == {
        "type": mqttpkt.CONNACK,
        "session_present": False,
        "rc": 0,
    }
    assert mqttpkt.parse(0x20, b"\x01\x05")["rc"] == 5
    assert mqttpkt.parse(0x90, b"\x00\x05\x01")["granted"] == [1]
    assert mqttpkt.parse(0x40, b"\x01\x02")["pid"] == 258
    assert mqttpkt.parse(0xD0, b"")["type"] == mqttpkt.PINGRESP


def test_malformed_packets_raise():
    raises(mqttpkt.MQTTProtocolError, mqttpkt.parse, 0x20, b"\x00")
    raises(mqttpkt.MQTTProtocolError, mqttpkt.parse, 0x30, b"\x00\x09ab")
    raises(mqttpkt.MQTTProtocolError, mqttpkt.parse, 0x36, b"\x00\x01a")
    raises(mqttpkt.MQTTProtocolError, mqttpkt.parse, 0x32, b"\x00\x01a\x00")
    raises(mqttpkt.MQTTProtocolError, mqttpkt.parse, 0x40, b"\x00")
    raises(mqttpkt.MQTTProtocolError, mqttpkt.parse, 0xF0, b"")


def test_split_stream_of_packets():
    data = mqttpkt.puback(1) + mqttpkt.publish("t", b"abc") + b"\x40"
    packets, rest = mqttpkt.split(data)
    assert len(packets) == 2
    assert rest == b"\x40"
    assert packets[0][0] == 0x40


def test_topic_matching():
    assert mqttpkt.topic_matches("devices/A/commands", "devices/A/commands")
    assert not mqttpkt.topic_matches("devices/A/commands", "devices/B/commands")
    assert mqttpkt.topic_matches("devices/+/data", "devices/X/data")
    assert mqttpkt.topic_matches("devices/#", "devices/X/data")
    assert not mqttpkt.topic_matches("devices/+", "devices/X/data")
    assert not mqttpkt.topic_matches("devices/A/commands", "devices/A/commands/x")


def test_a_packet_over_the_maximum_is_refused_from_its_header():
    big = mqttpkt.publish("devices/A/commands", b"x" * 5000, 1, False, 7)
    # the header alone (5 bytes) is enough to refuse it: nothing more is buffered
    raises(mqttpkt.PacketTooLarge, mqttpkt.take, big[:5], 4096)
    small = mqttpkt.publish("devices/A/commands", b"x" * 100, 1, False, 8)
    first, _body, rest = mqttpkt.take(small, 4096)
    assert first >> 4 == 3
    assert rest == b""


def test_a_refused_connection_is_an_mqtt_refusal_with_its_code():
    # built with super(): MicroPython's exception classes have no __init__ to call
    from iotfw.mqtt import MQTTError, MQTTRefused

    exc = MQTTRefused(5)
    assert isinstance(exc, MQTTError)
    assert exc.rc == 5
    assert "not authorized" in str(exc)
