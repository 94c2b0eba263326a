"""The mapping engine on documented payloads (tests/adapter_payloads.py): pure logic,
no broker (the stacks' test is tests/integration/test_adapters.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from iotp.adapters import AdapterEngine, Mapping, MappingError, builtin, parse
from iotp.adapters.loader import MappingFileError
from iotp.protocol import payloads as p
from tests import adapter_payloads as fx


def engine(**kwargs: Any) -> AdapterEngine:
    return AdapterEngine([builtin(n) for n in ("tasmota", "zigbee2mqtt", "shelly")], **kwargs)


def decoded(messages: list[tuple[str, bytes]]) -> dict[str, Any]:
    """kind -> the last payload of that kind (status as text)."""
    out: dict[str, Any] = {}
    for topic, body in messages:
        kind = topic.rsplit("/", 1)[1]
        out[kind] = body.decode() if kind == "status" else orjson.loads(body)
    return out


def command(device_id: str, name: str, params: dict[str, Any], cid: str = "c1") -> bytes:
    return orjson.dumps({"id": cid, "command": name, "params": params})


def test_tasmota_registers_streams_with_units_and_reports_relays() -> None:
    e = engine()
    t = e.translate(*fx.TASMOTA_SENSOR, now=1.0)
    assert t.device_ids == [fx.TASMOTA_ID]
    out = decoded(t.messages)
    assert t.messages[0][0] == f"devices/{fx.TASMOTA_ID}/info"  # registration first
    assert out["data"]["AM2301.Temperature"] == 22.4
    assert out["data"]["ENERGY.Power"] == 42
    assert "Time" not in out["data"]
    assert "TempUnit" not in out["data"]
    assert out["info"]["units"]["AM2301.Temperature"] == "°C"
    assert out["info"]["units"]["ENERGY.Power"] == "W"
    assert out["info"]["adapter"] == {"mapping": "tasmota", "vars": {"topic": "kitchen"}}
    # What the platform would store: its own parser takes it.
    msg = p.parse_data(orjson.dumps(out["data"]), 1.0)
    assert msg.metrics["AM2301.Humidity"] == 45.1

    out = decoded(e.translate(*fx.TASMOTA_STATE).messages)
    assert out["state"] == {"relays": {"POWER1": False, "POWER2": True}}
    assert {"relay:POWER1", "relay:POWER2", "reboot"} <= set(out["info"]["capabilities"])
    assert out["data"] == {"uptime": 611, "wifi_quality": 44, "wifi_signal": -78, "load_avg": 19}
    info = p.parse_info(orjson.dumps(out["info"]))
    assert info.rssi == -78
    # Nothing new: no info again.
    assert [t for t, _ in e.translate(*fx.TASMOTA_STATE).messages if t.endswith("/info")] == []
    assert decoded(e.translate(*fx.TASMOTA_INFO1).messages)["info"]["firmware"] == "13.1.0(tasmota)"


def test_tasmota_presence_and_a_command_acked_by_its_result() -> None:
    e = engine()
    assert decoded(e.translate(*fx.TASMOTA_LWT_ONLINE).messages)["status"] == "online"
    assert decoded(e.translate(*fx.TASMOTA_LWT_OFFLINE).messages)["status"] == "offline"
    out, acks = e.command(
        fx.TASMOTA_ID, command(fx.TASMOTA_ID, "relay", {"name": "POWER2", "state": "off"})
    )
    assert out == [("cmnd/kitchen/POWER2", b"OFF")]
    assert acks == []
    result = decoded(e.translate(*fx.tasmota_result("POWER2", "OFF")).messages)
    assert result["ack"] == {"id": "c1", "status": "ok", "result": {"POWER2": "OFF"}}
    assert result["state"]["relays"]["POWER2"] is False
    # A command the firmware refuses: the oldest waiting one fails with its answer.
    e.command(fx.TASMOTA_ID, command(fx.TASMOTA_ID, "reboot", {}, cid="c2"))
    refused = decoded(e.translate(*fx.TASMOTA_UNKNOWN_COMMAND).messages)
    assert refused["ack"]["id"] == "c2"
    assert refused["ack"]["status"] == "error"
    assert "Unknown" in refused["ack"]["error"]


def test_a_report_settles_commands_another_engine_published() -> None:
    """Two workers: one published the commands (and holds their expectations), the
    firmware's reports reach the other, which settles the open commands it is given
    (from the database, in the worker) against each report."""
    sender, other = engine(), engine()
    for e in (sender, other):
        e.translate(*fx.TASMOTA_STATE)
    sender.command(
        fx.TASMOTA_ID, command(fx.TASMOTA_ID, "relay", {"name": "POWER1", "state": "on"})
    )
    relay_on = ("c1", "relay", {"name": "POWER1", "state": "on"})
    relay_off = ("c2", "relay", {"name": "POWER1", "state": "off"})
    other_relay = ("c3", "relay", {"name": "POWER2", "state": "on"})
    toggle = ("c4", "relay", {"name": "POWER1", "state": "toggle"})
    reboot: tuple[str, str, dict[str, Any]] = ("c5", "reboot", {})

    t = other.translate(*fx.tasmota_result("POWER1", "ON"))
    assert "ack" not in decoded(t.messages)  # no expectation in this engine
    [report] = t.reports
    assert report.device_id == fx.TASMOTA_ID
    assert report.relays == {"POWER1": True}
    settled = {
        cid: other.settle(fx.TASMOTA_ID, cid, name, params, report)
        for cid, name, params in (relay_on, relay_off, other_relay, toggle, reboot)
    }
    ack = settled["c1"]
    assert ack is not None
    assert ack[0] == f"devices/{fx.TASMOTA_ID}/ack"
    assert orjson.loads(ack[1]) == {"id": "c1", "status": "ok", "result": {"POWER1": "ON"}}
    assert settled["c2"] is None  # the report says the relay is on, not off
    assert settled["c3"] is None  # another relay
    assert settled["c4"] is not None  # a toggle ends in either state
    assert settled["c5"] is None
    assert other.settle(fx.TASMOTA_ID, "c9", "servo", {}, report) is None
    assert other.settle("not-mapped", *relay_on, report) is None
    restart = other.translate(f"stat/{fx.TASMOTA_TOPIC}/RESULT", b'{"Restart":"Restarting"}')
    assert other.settle(fx.TASMOTA_ID, *reboot, restart.reports[0]) is not None

    # The engine that holds the expectation acks from memory and says so: not twice.
    t = sender.translate(*fx.tasmota_result("POWER1", "ON"))
    assert decoded(t.messages)["ack"]["id"] == "c1"
    assert sender.settle(fx.TASMOTA_ID, *relay_on, t.reports[0]) is None
    # Reports without a key any command is acked by give nothing to look up.
    assert other.translate(*fx.TASMOTA_SENSOR).reports == []
    assert other.translate(f"stat/{fx.TASMOTA_TOPIC}/RESULT", b'{"Dimmer":40}').reports == []

    # Zigbee2MQTT: the device's state message is the report.
    z2m = engine()
    z2m.translate(*fx.Z2M_BRIDGE_DEVICES)
    [report] = z2m.translate(*fx.z2m_state(fx.Z2M_PLUG, "OFF")).reports
    plug_off = ("z1", "relay", {"name": "state", "state": "off"})
    assert z2m.settle(fx.Z2M_PLUG_ID, *plug_off, report) is not None
    assert (
        z2m.settle(fx.Z2M_PLUG_ID, "z2", "relay", {"name": "state", "state": "on"}, report) is None
    )
    assert z2m.translate(*fx.Z2M_SENSOR_READING).reports == []


def test_a_device_bound_from_the_database_keeps_what_it_has_shown() -> None:
    """A worker restarted (or meeting a device another worker registered) binds it from
    the database: the next info, which replaces capabilities and units, keeps the relays
    and units stored although this engine has not seen them yet."""
    e = engine()
    e.bind(
        fx.TASMOTA_ID,
        "tasmota",
        {"topic": fx.TASMOTA_TOPIC},
        capabilities=["relay:POWER1", "relay:POWER2"],
        units={"ENERGY.Power": "W"},
    )
    info = decoded(e.translate(*fx.TASMOTA_SENSOR).messages)["info"]
    assert {"relay:POWER1", "relay:POWER2"} <= set(info["capabilities"])
    assert info["units"]["ENERGY.Power"] == "W"
    assert info["units"]["AM2301.Temperature"] == "°C"


def test_commands_the_firmware_cannot_take_are_refused_with_the_reason() -> None:
    e = engine()
    e.translate(*fx.TASMOTA_STATE)
    _, acks = e.command(fx.TASMOTA_ID, command(fx.TASMOTA_ID, "ota", {"url": "http://x"}))
    ack = orjson.loads(acks[0][1])
    assert ack["status"] == "error"
    assert "Tasmota" in ack["error"]
    assert "OTA" in ack["error"]
    _, acks = e.command(fx.TASMOTA_ID, command(fx.TASMOTA_ID, "servo", {"angle": 3}))
    assert "has no command 'servo'" in orjson.loads(acks[0][1])["error"]
    # not a mapped device: nothing
    assert e.command("A1", command("A1", "relay", {"name": "x", "state": "on"})) == ([], [])


def test_zigbee2mqtt_one_bridge_many_devices() -> None:
    e = engine()
    t = e.translate(*fx.Z2M_BRIDGE_DEVICES)
    assert t.device_ids == [fx.Z2M_SENSOR_ID, fx.Z2M_PLUG_ID]  # the coordinator skipped
    infos = [orjson.loads(b) for _, b in t.messages]
    assert infos[0]["model"] == "WSDCGQ11LM"
    assert infos[0]["name"] == fx.Z2M_SENSOR
    assert infos[0]["adapter"]["vars"] == {"name": fx.Z2M_SENSOR}
    out = decoded(e.translate(*fx.Z2M_SENSOR_READING).messages)
    assert out["data"]["temperature"] == 21.72
    assert out["data"]["linkquality"] == 134
    assert out["info"]["units"]["voltage"] == "mV"
    out = decoded(e.translate(*fx.Z2M_PLUG_STATE).messages)
    assert out["state"] == {"relays": {"state": False}}
    assert "relay:state" in out["info"]["capabilities"]
    assert decoded(e.translate(*fx.z2m_availability(fx.Z2M_PLUG, "offline")).messages) == {
        "status": "offline"
    }
    # legacy availability payload: plain text
    assert decoded(e.translate(f"zigbee2mqtt/{fx.Z2M_PLUG}/availability", b"online").messages) == {
        "status": "online"
    }
    out_msgs, _ = e.command(
        fx.Z2M_PLUG_ID, command(fx.Z2M_PLUG_ID, "relay", {"name": "state", "state": "on"})
    )
    assert out_msgs == [(f"zigbee2mqtt/{fx.Z2M_PLUG}/set", b'{"state":"ON"}')]
    # the platform's own /set comes back to it: ignored
    assert e.translate(*out_msgs[0]).ignored
    assert decoded(e.translate(*fx.z2m_state(fx.Z2M_PLUG, "ON")).messages)["ack"]["status"] == "ok"
    # The bridge's own presence: offline takes its devices with it; online waits for theirs.
    assert e.translate("zigbee2mqtt/bridge/state", b'{"state":"online"}').messages == []
    gone = e.translate("zigbee2mqtt/bridge/state", b'{"state":"offline"}')
    assert sorted(gone.device_ids) == sorted([fx.Z2M_SENSOR_ID, fx.Z2M_PLUG_ID])
    assert {body for _, body in gone.messages} == {b"offline"}
    assert e.translate("zigbee2mqtt/bridge/logging", b'{"level":"info"}').ignored


def test_shelly_status_presence_and_rpc_acked_by_id() -> None:
    e = engine()
    assert decoded(e.translate(*fx.SHELLY_ONLINE).messages)["status"] == "online"
    out = decoded(e.translate(*fx.SHELLY_SWITCH).messages)
    assert out["state"] == {"relays": {"switch_0": False}}
    assert out["data"]["switch_0.voltage"] == 229.8
    assert out["data"]["switch_0.aenergy.total"] == 1234.567
    assert out["data"]["switch_0.temperature.tC"] == 41.5
    assert "switch_0.temperature.tF" not in out["data"]
    assert "switch_0.id" not in out["data"]
    assert out["info"]["units"]["switch_0.apower"] == "W"
    assert decoded(e.translate(*fx.SHELLY_WIFI).messages)["info"]["ip"] == "192.168.1.50"
    msgs, acks = e.command(
        fx.SHELLY_ID, command(fx.SHELLY_ID, "relay", {"name": "switch_0", "state": "on"})
    )
    assert acks == []
    assert msgs[0][0] == f"{fx.SHELLY}/rpc"
    request = orjson.loads(msgs[0][1])
    assert request == {
        "id": "c1",
        "src": f"shelly-rpc/{fx.SHELLY}",
        "method": "Switch.Set",
        "params": {"id": 0, "on": True},
    }
    ack = decoded(e.translate(*fx.shelly_response(request, {"was_on": False})).messages)["ack"]
    assert ack == {"id": "c1", "status": "ok", "result": {"was_on": False}}
    toggle, _ = e.command(
        fx.SHELLY_ID, command(fx.SHELLY_ID, "relay", {"name": "switch_0", "state": "toggle"})
    )
    assert orjson.loads(toggle[0][1])["method"] == "Switch.Toggle"
    _, acks = e.command(
        fx.SHELLY_ID, command(fx.SHELLY_ID, "relay", {"name": "cover_0", "state": "on"})
    )
    assert "not a relay" in orjson.loads(acks[0][1])["error"]
    assert decoded(e.translate(*fx.SHELLY_OFFLINE).messages)["status"] == "offline"


def test_bad_foreign_messages_are_rejected_with_a_reason() -> None:
    e = engine()
    with pytest.raises(MappingError) as bad:
        e.translate(f"tele/{fx.TASMOTA_TOPIC}/LWT", b"Sleeping")
    assert bad.value.reason == "bad_status"
    with pytest.raises(MappingError) as bad:
        e.translate(f"tele/{fx.TASMOTA_TOPIC}/SENSOR", b'{"AM2301": ')
    assert bad.value.reason == "bad_json"
    with pytest.raises(MappingError) as bad:
        e.translate(f"tele/{fx.TASMOTA_TOPIC}/SENSOR", b"{" + b" " * 20000 + b"}")
    assert bad.value.reason == "oversize"
    with pytest.raises(MappingError) as bad:
        e.translate(f"tele/{'x' * 80}/SENSOR", b"{}")
    assert bad.value.reason == "bad_device_id"
    assert e.translate("somewhere/else", b"{}").ignored


def test_a_mapping_cannot_speak_for_the_platforms_own_devices() -> None:
    # An id the platform already has, not registered by a mapping: refused.
    e = engine(claimed=lambda device_id: device_id == "tasmota-A1")
    with pytest.raises(MappingError) as taken:
        e.translate("tele/A1/SENSOR", b'{"x": 1}')
    assert taken.value.reason == "adapter_id_taken"
    # One mapping's device is not another's: a mapping that would name the same id.
    copy = builtin("tasmota").model_copy(update={"name": "tasmota2"})
    e.add(
        copy.model_copy(
            update={
                "rules": [
                    r.model_copy(update={"topic": r.topic.replace("tele/", "tele2/")})
                    for r in copy.rules
                ]
            }
        )
    )
    e.translate("tele/kitchen/SENSOR", b'{"x": 1}')
    with pytest.raises(MappingError):
        e.translate("tele2/kitchen/SENSOR", b'{"x": 1}')
    # Topics under the platform's roots never reach a mapping, even one with a wildcard first level.
    assert e.translate("devices/online", b"true").ignored
    assert e.translate("iotp/status/x", b"{}").ignored


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device_id": "{topic}"}, "fixed text"),
        ({"device_id": "tasmota"}, "capture"),
        ({"rules": [{"topic": "devices/{topic}/data", "data": {"flatten": True}}]}, "belong to"),
        ({"rules": [{"topic": "{topic}/#", "data": {"flatten": True}}]}, "neither"),
        ({"rules": [{"topic": "{topic}", "data": {"flatten": True}}]}, "fixed segment"),
        ({"rules": [{"topic": "tele/{other}/SENSOR", "data": {}}]}, "lacks the capture"),
    ],
)
def test_mappings_that_would_open_a_way_around_are_invalid(
    change: dict[str, Any], message: str
) -> None:
    data = builtin("tasmota").model_dump(mode="json") | change
    with pytest.raises(ValueError, match=message):
        Mapping.model_validate(data)


def test_a_mapping_added_at_run_time_from_yaml() -> None:
    text = """
name: thermo
device_id: "thermo-{room}"
rules:
  - topic: "home/{room}/climate"
    data: {fields: {temperature: {path: t, unit: "°C"}}}
"""
    e = AdapterEngine()
    assert e.add(parse(text)) == ["home/+/climate"]
    out = decoded(e.translate("home/attic/climate", b'{"t": 30.5}').messages)
    assert out["data"] == {"temperature": 30.5}
    assert out["info"]["units"] == {"temperature": "°C"}
    assert e.remove("thermo") == ["home/+/climate"]
    # Filters another one covers are left out: the broker would deliver twice.
    assert engine().filters("zigbee2mqtt") == ["zigbee2mqtt/#"]
    assert e.translate("home/attic/climate", b'{"t": 30.5}').ignored
    with pytest.raises(MappingFileError, match="device_id"):
        parse("name: x\nrules: []\n")


def test_foreign_account_rules_for_both_brokers() -> None:
    from amqtt.contexts import Action

    from iotp.broker.auth import filter_covers, foreign_allowed
    from iotp.broker.mosquitto import render_device_acl
    from iotp.errors import InvalidRequestError
    from iotp.services.adapters import account_acl

    mappings = [builtin(n) for n in ("tasmota", "zigbee2mqtt", "shelly")]
    acl = account_acl(mappings[0], "kitchen", mappings)
    assert acl == {"write": ["tele/kitchen/#", "stat/kitchen/#"], "read": ["cmnd/kitchen/#"]}
    # amqtt: its own topics only, never the platform's, and a wildcard read stays inside.
    assert foreign_allowed(acl, "tele/kitchen/SENSOR", Action.PUBLISH)
    assert not foreign_allowed(acl, "tele/garage/SENSOR", Action.PUBLISH)
    assert not foreign_allowed(acl, "cmnd/kitchen/POWER1", Action.PUBLISH)
    assert foreign_allowed(acl, "cmnd/kitchen/#", Action.SUBSCRIBE)
    assert not foreign_allowed(acl, "#", Action.SUBSCRIBE)
    assert not foreign_allowed(acl, "cmnd/+/POWER1", Action.SUBSCRIBE)
    assert not foreign_allowed({"write": ["#"], "read": ["#"]}, "devices/A1/data", Action.PUBLISH)
    assert filter_covers("a/+/c", "a/b/c")
    assert not filter_covers("a/+/c", "a/#")
    # Mosquitto: the platform's roots denied first, then the account's topics.
    text = render_device_acl(None, {"tasmota-kitchen": acl})
    block = text.split("user tasmota-kitchen\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[:3] == ["topic deny devices/#", "topic deny iotp/#", "topic deny provision/#"]
    assert "topic write tele/kitchen/#" in block
    assert "topic read cmnd/kitchen/#" in block
    # A scope can never reach another mapping's roots or the platform's.
    for scope in ("tele", "zigbee2mqtt", "devices", "iotp", "shelly-rpc"):
        with pytest.raises(InvalidRequestError, match="not its own"):
            account_acl(mappings[2], scope, mappings)
