from fwtest_helpers import raises
from iotfw import identity, jsonx, payloads


def test_topics_and_ids():
    assert payloads.topic("A4CF12B3C4D5", "data") == "devices/A4CF12B3C4D5/data"
    assert payloads.valid_node_id("A4CF12B3C4D5")
    assert payloads.valid_node_id("sim_device-1")
    for bad in ("", "a/b", "a+b", "x" * 65, "caf\u00e9", 5, "A1\n", "\nA1"):
        assert not payloads.valid_node_id(bad)


def test_identity_from_mac():
    mac = b"\xa4\xcf\x12\xb3\xc4\xd5"
    assert identity.node_id_from_mac(mac) == "A4CF12B3C4D5"
    assert identity.node_id_from_mac("a4:cf:12:b3:c4:d5") == "A4CF12B3C4D5"
    assert identity.mac_text(mac) == "A4:CF:12:B3:C4:D5"
    assert identity.setup_ssid(mac) == "IoTPlatform-Setup-C4D5"


def test_data_payload():
    msg = payloads.data({"temperature": 23.4, "humidity": None, "gas": 87}, 7, 1764230400.25)
    assert msg == {"temperature": 23.4, "gas": 87, "seq": 7, "ts": 1764230400.25}
    assert "ts" not in payloads.data({"gas": 1}, 0)
    back = jsonx.loads(payloads.encode(msg))
    assert back == msg


def test_info_payload_matches_protocol():
    caps = payloads.capabilities(
        ["temperature", "humidity", "gas"], ["light", "fan"], custom=["beep"]
    )
    assert caps == [
        "temperature",
        "humidity",
        "gas",
        "relay:light",
        "relay:fan",
        "servo",
        "reboot",
        "ota",
        "automation",
        "webhook",
        "cmd:beep",
    ]
    info = payloads.info(
        "esp32-env", "1.0.0", caps, 2, "A4:CF:12:B3:C4:D5", ip="192.0.2.5", rssi=-61, name="Kitchen"
    )
    assert info["protocol"] == 1
    assert info["type"] == "esp32-env"
    assert info["firmware"] == "1.0.0"
    assert info["interval"] == 2
    assert info["ip"] == "192.0.2.5"
    assert info["rssi"] == -61
    assert info["name"] == "Kitchen"
    assert "name" not in payloads.info("t", "1", [], 2, "m")


def test_info_declares_the_units_of_the_sensors_present():
    units = payloads.units(["temperature", "humidity", "gas"])
    assert units == {"temperature": "\u00b0C", "humidity": "%", "gas": ""}
    assert payloads.units(["gas"]) == {"gas": ""}  # no DHT22: no climate units
    info = payloads.info("esp32-env", "1.0.0", ["gas"], 2, "m", units=units)
    assert jsonx.loads(payloads.encode(info))["units"]["temperature"] == "\u00b0C"
    assert "units" not in payloads.info("t", "1", [], 2, "m")


def test_acks_and_events():
    assert payloads.ack_ok("c", {"angle": 9}) == {"id": "c", "status": "ok", "result": {"angle": 9}}
    assert payloads.ack_ok("c")["result"] == {}
    assert payloads.ack_error(None, "malformed JSON") == {
        "id": None,
        "status": "error",
        "error": "malformed JSON",
    }
    prog = payloads.ack_progress("c", "downloading", 40)
    assert prog["status"] == "progress"
    assert prog["result"] == {"stage": "downloading", "percent": 40}
    ev = payloads.event("gas_alarm", "critical", 5.0, value=612)
    assert ev == {"event": "gas_alarm", "level": "critical", "value": 612, "ts": 5.0}


def test_oversize_payload_is_refused():
    raises(ValueError, payloads.encode, {"x": "y" * 20000})
