from __future__ import annotations

import pytest

from iotp.protocol import Kind, RejectedMessage, parse_topic
from iotp.protocol import payloads as p
from iotp.protocol.topics import TopicError, command_topic, subscription

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("devices/A4CF12B3C4D5/data", ("A4CF12B3C4D5", Kind.DATA)),
        ("devices/dev_1-x/status", ("dev_1-x", Kind.STATUS)),
        ("devices/" + "a" * 64 + "/ack", ("a" * 64, Kind.ACK)),
    ],
)
def test_parse_topic_accepts_protocol_topics(topic: str, expected: tuple[str, Kind]) -> None:
    assert parse_topic(topic) == expected


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("devices/bad!/data", "bad_device_id"),
        ("devices/" + "a" * 65 + "/data", "bad_device_id"),
        ("devices//data", "bad_device_id"),
        ("devices/A/unknown", "bad_topic"),
        ("devices/A/data/extra", "bad_topic"),
        ("other/A/data", "bad_topic"),
    ],
)
def test_parse_topic_rejects_with_reason(topic: str, reason: str) -> None:
    with pytest.raises(TopicError) as exc:
        parse_topic(topic)
    assert exc.value.reason == reason


def test_topic_templates() -> None:
    assert command_topic("X1") == "devices/X1/commands"
    assert subscription(Kind.DATA) == "devices/+/data"
    assert subscription(Kind.DATA, "g") == "$share/g/devices/+/data"


def test_data_numeric_fields_become_metrics_others_attributes() -> None:
    msg = p.parse_data(
        b'{"temperature": 23.4, "gas": 87, "ok": true, "mode": "auto",'
        b' "ts": 1799999999.5, "seq": 7}',
        NOW,
    )
    assert msg.metrics == {"temperature": 23.4, "gas": 87.0}
    assert msg.attributes == {"ok": True, "mode": "auto"}
    assert msg.ts == 1799999999.5
    assert msg.seq == 7
    assert not msg.ts_replaced


def test_data_without_ts_uses_receive_time_and_no_seq() -> None:
    msg = p.parse_data(b'{"t": 1}', NOW)
    assert msg.ts == NOW
    assert msg.seq == -1


@pytest.mark.parametrize("ts", [1000, 0, NOW + 7200])
def test_data_with_unset_clock_gets_receive_time(ts: float) -> None:
    msg = p.parse_data(f'{{"t": 1, "ts": {ts}}}'.encode(), NOW)
    assert msg.ts == NOW
    assert msg.ts_replaced


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "not_object"),
        (b"42", "not_object"),
        (b'"online"', "not_object"),
        (b'{"t": NaN}', "non_finite"),
        (b'{"t": Infinity}', "non_finite"),
        (b'{"t": 1e999}', "non_finite"),
        (b'{"bad name": 1}', "bad_name"),
        (b'{"' + b"x" * 65 + b'": 1}', "bad_name"),
        (b'{"t": 1, "ts": "yesterday"}', "bad_type"),
        (b'{"t": 1, "seq": -1}', "bad_type"),
        (b'{"t": 1, "seq": 1.5}', "bad_type"),
        (b'{"t": 1, "seq": true}', "bad_type"),
        (b"{}", "empty"),
        (b'{"ts": 1799999999}', "empty"),
        (b'{"t": "' + b"x" * 17000 + b'"}', "oversize"),
        (b"{" + b",".join(b'"m%d": 1' % i for i in range(65)) + b"}", "too_many_fields"),
    ],
)
def test_data_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessage) as exc:
        p.parse_data(payload, NOW)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"OFFLINE", False),
        (b" online\n", True),
        (b'{"status": "offline"}', False),
    ],
)
def test_status(payload: bytes, online: bool) -> None:
    assert (p.parse_status(payload) == "online") is online


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b"updating", "updating"),
        (b"Update_Success\n", "update_success"),
        (b'{"status": "updating"}', "updating"),
        (b'{"status": "update_success"}', "update_success"),
    ],
)
def test_update_statuses_of_the_original_design(payload: bytes, value: str) -> None:
    assert p.parse_status(payload) == value


@pytest.mark.parametrize(
    "payload", [b"up", b"", b'{"status": 1}', b"[]", b"update_failed", b'{"status": "upd"}']
)
def test_status_rejected(payload: bytes) -> None:
    with pytest.raises(RejectedMessage) as exc:
        p.parse_status(payload)
    assert exc.value.reason == "bad_status"


def test_info_keeps_known_fields_and_extras() -> None:
    info = p.parse_info(
        b'{"type": "esp32-env", "firmware": "1.0.0", "capabilities": ["temperature", "relay:fan"],'
        b' "interval": 2, "rssi": -60, "board": "devkit"}'
    )
    assert info.type == "esp32-env"
    assert info.capabilities == ["temperature", "relay:fan"]
    assert info.interval == 2.0
    assert info.extra == {"board": "devkit"}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"capabilities": "relay"}',
        b'{"interval": -1}',
        b'{"interval": "2"}',
        b'{"firmware": 1}',
        b'{"rssi": "weak"}',
        b'{"capabilities": [""]}',
    ],
)
def test_info_wrong_types_rejected(payload: bytes) -> None:
    with pytest.raises(RejectedMessage) as exc:
        p.parse_info(payload)
    assert exc.value.reason == "bad_info"


def test_ack_and_event() -> None:
    ack = p.parse_ack(b'{"id": "c1", "status": "ok", "result": {"angle": 90}}')
    assert (ack.id, ack.status, ack.result) == ("c1", "ok", {"angle": 90})
    with pytest.raises(RejectedMessage):
        p.parse_ack(b'{"id": "c1", "status": "done"}')
    event = p.parse_event(b'{"event": "gas_alarm", "level": "critical", "value": 612}')
    assert event.data == {"value": 612}
    with pytest.raises(RejectedMessage):
        p.parse_event(b'{"level": "critical"}')


def test_control_requests_round_trip_and_bad_ones_are_refused() -> None:
    from iotp.protocol.control import (
        ControlRequest,
        control_subscription,
        control_topic,
        encode_request,
        parse_request,
    )

    topic = control_topic("iotp/events", ControlRequest.DISPATCH)
    assert topic == "iotp/control/dispatch"
    assert control_subscription("iotp/events", "g") == "$share/g/iotp/control/+"
    assert parse_request(topic, encode_request(["A", "B"])) == (ControlRequest.DISPATCH, ["A", "B"])
    assert parse_request("iotp/control/reboot", encode_request(["A"])) is None
    assert parse_request(topic, b"not json") is None
    assert parse_request(topic, b"[1]") is None


def test_event_publisher_writes_the_event_envelope_on_its_topic() -> None:
    import orjson

    from iotp.protocol.events import EventPublisher, EventType

    sent: list[tuple[str, bytes, int]] = []
    publish = EventPublisher("iotp/events", lambda t, p, q: sent.append((t, p, q)))
    publish(EventType.ALERT, "D1", {"action": "raised"}, 12.5)
    [(topic, payload, qos)] = sent
    assert (topic, qos) == ("iotp/events/alert/D1", 1)
    assert orjson.loads(payload) == {
        "type": "alert",
        "device_id": "D1",
        "ts": 12.5,
        "payload": {"action": "raised"},
    }


def test_the_dashboards_event_types_are_generated_from_the_current_models() -> None:
    """web/events.json is iotp.protocol.events as it is (regenerate: in web/,
    `npm run dump:events && npm run gen:api`), and events.gen.ts was generated from it."""
    import json
    import re
    from pathlib import Path

    from iotp.protocol.events import EventType
    from iotp.protocol.schema import schema_document

    web = Path(__file__).resolve().parents[2] / "web"
    assert json.loads((web / "events.json").read_text()) == schema_document()
    generated = (web / "src/live/events.gen.ts").read_text()
    union = re.search(r"^\s*EventType: (.*);$", generated, re.MULTILINE)
    assert union is not None
    assert re.findall(r'"([a-z_]+)"', union.group(1)) == [t.value for t in EventType]
