"""Home Assistant discovery configs against fixtures written from Home Assistant's
documentation (tests/fixtures/homeassistant), and the pure parts of consuming them.
Pure logic: no broker (tests/integration/test_homeassistant.py runs it on one)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from iotp.homeassistant import abbreviations, consume, publish
from iotp.homeassistant.publish import DeviceView, Topics

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "homeassistant"
TOPICS = Topics("homeassistant", "iotp-ha")
REFERENCE = DeviceView(
    id="A4CF12B3C4D5",
    name="Kitchen",
    type="esp32-env",
    firmware="1.0.0",
    capabilities=(
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
    ),
    mac="A4:CF:12:B3:C4:D5",
)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


DOCS = fixture("discovery")


def test_the_abbreviation_table_agrees_with_the_documentation() -> None:
    for table, documented in (
        (abbreviations.ENTITY, DOCS["abbreviations"]),
        (abbreviations.DEVICE, DOCS["device_abbreviations"]),
        (abbreviations.ORIGIN, DOCS["origin_abbreviations"]),
    ):
        for short, long in documented.items():
            assert table.get(short) == long, short
        for short, long in table.items():
            # ours: documented, or a key that is its own long form
            assert documented.get(short, short) == long, short


def test_the_reference_device_gives_the_documented_components() -> None:
    configs = publish.configs(REFERENCE, TOPICS, "0.1.0")
    node = REFERENCE.id
    assert sorted(configs) == sorted(
        [
            f"homeassistant/sensor/{node}/temperature/config",
            f"homeassistant/sensor/{node}/humidity/config",
            f"homeassistant/sensor/{node}/gas/config",
            f"homeassistant/switch/{node}/relay_light/config",
            f"homeassistant/switch/{node}/relay_fan/config",
            f"homeassistant/number/{node}/servo/config",
            f"homeassistant/button/{node}/reboot/config",
        ]
    )


def check_config(topic: str, config: dict[str, Any]) -> dict[str, Any]:
    """Everything the documentation asks of one published config; returns it expanded."""
    topic_re = re.compile(r"^homeassistant/([a-z_]+)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/config$")
    match = topic_re.fullmatch(topic)
    assert match, topic
    spec = fixture(match.group(1))
    documented_short = {**DOCS["abbreviations"], "~": "~"}
    allowed = set(spec["keys"]) | set(DOCS["common_keys"])
    for key in config:  # each key: a documented abbreviation or a documented long key
        assert key in documented_short or key in allowed, (topic, key)
    full = abbreviations.expand(config)
    assert set(spec["required"]) <= set(full), (topic, spec["required"])
    assert set(full) <= allowed, (topic, set(full) - allowed)
    # The device registry needs unique_id, and identifiers or connections.
    assert full["unique_id"]
    device = full["device"]
    assert set(device) <= set(DOCS["device"]["keys"])
    assert any(device.get(k) for k in DOCS["device"]["requires_one_of"])
    assert set(full["origin"]) <= set(DOCS["origin"]["keys"])
    assert all(full["origin"].get(k) for k in DOCS["origin"]["required"])
    for key, value in full.items():
        if key.endswith("_topic"):
            assert not set(value) & {"~", "+", "#"}, (key, value)
    for key, values in spec.get("values", {}).items():
        if key in full:
            assert full[key] in values, (topic, key, full[key])
    if "entity_category" in full:
        assert full["entity_category"] in DOCS["entity_category"]
    units = spec.get("units", {})
    if full.get("device_class") in units:
        assert full["unit_of_measurement"] in units[full["device_class"]], topic
    return full


def test_every_published_config_carries_what_the_documentation_requires() -> None:
    configs = publish.configs(REFERENCE, TOPICS, "0.1.0")
    full = {topic.split("/")[-2]: check_config(topic, c) for topic, c in configs.items()}
    base = "iotp-ha/A4CF12B3C4D5"
    assert full["temperature"]["device_class"] == "temperature"
    assert full["temperature"]["unit_of_measurement"] == "°C"
    assert full["temperature"]["state_topic"] == "devices/A4CF12B3C4D5/data"
    assert full["humidity"]["unit_of_measurement"] == "%"
    assert "device_class" not in full["gas"]  # a raw reading: no class fits
    assert full["relay_light"]["command_topic"] == f"{base}/relay_light/set"
    assert full["relay_light"]["state_topic"] == "devices/A4CF12B3C4D5/state"
    assert full["servo"]["min"] == 0
    assert full["servo"]["max"] == 180
    assert full["reboot"]["command_topic"] == f"{base}/reboot/set"
    assert full["reboot"]["device_class"] == "restart"
    for config in full.values():
        assert config["availability_topic"] == f"{base}/availability"
        assert config["device"]["identifiers"] == ["iotp_A4CF12B3C4D5"]
        assert config["device"]["name"] == "Kitchen"
        assert config["device"]["connections"] == [["mac", "a4:cf:12:b3:c4:d5"]]
        assert consume.is_ours(config)


def test_a_renamed_device_changes_only_the_device_name() -> None:
    before = publish.configs(REFERENCE, TOPICS, "0.1.0")
    renamed = DeviceView(**{**REFERENCE.__dict__, "name": "Pantry"})
    after = publish.configs(renamed, TOPICS, "0.1.0")
    assert set(before) == set(after)
    for topic in before:
        assert after[topic]["dev"]["name"] == "Pantry"
        assert {**after[topic], "dev": None} == {**before[topic], "dev": None}


def test_base_topic_and_abbreviations_expand_as_the_documentation_says() -> None:
    raw = {
        "~": "homeassistant/light/kitchen",
        "name": "Kitchen",
        "uniq_id": "kitchen_light",
        "cmd_t": "~/set",
        "stat_t": "~/state",
        "avty_t": "status/~",
        "dev": {"ids": ["k1"], "mf": "Acme", "sw": "1.2"},
        "o": {"name": "sketch", "sw": "0.1", "url": "https://example.org"},
    }
    assert abbreviations.expand(raw) == {
        "name": "Kitchen",
        "unique_id": "kitchen_light",
        "command_topic": "homeassistant/light/kitchen/set",
        "state_topic": "homeassistant/light/kitchen/state",
        "availability_topic": "status/homeassistant/light/kitchen",
        "device": {"identifiers": ["k1"], "manufacturer": "Acme", "sw_version": "1.2"},
        "origin": {"name": "sketch", "sw_version": "0.1", "support_url": "https://example.org"},
    }


def test_documentation_examples_are_read() -> None:
    for name in ("sensor", "binary_sensor", "switch", "number", "button"):
        example = fixture(name)["example"]
        found = consume.announcement(name, "node1", "obj1", abbreviations.expand(example))
        assert found.entity.device_id == "node1"
        assert found.entity.object == "obj1"


@pytest.mark.parametrize(
    ("obj", "payload", "expected"),
    [
        ("relay_light", b"ON", ("relay", {"name": "light", "state": "on"})),
        ("relay_fan", b"OFF", ("relay", {"name": "fan", "state": "off"})),
        ("servo", b"90", ("servo", {"angle": 90})),
        ("servo", b"45.0", ("servo", {"angle": 45})),
        ("reboot", b"PRESS", ("reboot", {})),
    ],
)
def test_home_assistant_commands_become_platform_commands(
    obj: str, payload: bytes, expected: tuple[str, dict[str, Any]]
) -> None:
    assert publish.to_command(obj, payload, REFERENCE.capabilities) == expected


@pytest.mark.parametrize(
    ("obj", "payload", "reason"),
    [
        ("relay_light", b"DIM", "expected ON"),
        ("relay_pump", b"ON", "no entity"),
        ("servo", b"ninety", "a number"),
        ("servo", b"4.5", "whole"),
        ("reboot", b"NOW", "PRESS"),
    ],
)
def test_bad_home_assistant_commands_say_why(obj: str, payload: bytes, reason: str) -> None:
    with pytest.raises(publish.CommandError, match=reason):
        publish.to_command(obj, payload, REFERENCE.capabilities)


def test_command_topics_are_parsed_strictly() -> None:
    assert TOPICS.parse_command("iotp-ha/A4CF12B3C4D5/servo/set") == ("A4CF12B3C4D5", "servo")
    for bad in ("iotp-ha/A4CF/servo", "iotp-ha/a/b/c/set", "iotp-ha/bad id/servo/set", "x/y/z/set"):
        assert TOPICS.parse_command(bad) is None


# ---- consuming discovery ----------------------------------------------------------


def announce(component: str, node: str, obj: str, raw: dict[str, Any]) -> consume.Announcement:
    return consume.announcement(component, node, obj, consume.load(json.dumps(raw).encode()))


def test_an_abbreviated_foreign_config_is_read() -> None:
    found = announce(
        "switch",
        "kitchen",
        "relay",
        {
            "~": "kitchen/switch/relay",
            "name": "Relay",
            "uniq_id": "kitchen_relay",
            "cmd_t": "~/command",
            "stat_t": "~/state",
            "pl_on": "1",
            "pl_off": "0",
            "avty_t": "kitchen/status",
            "dev": {"ids": ["kitchen"], "name": "Kitchen plug", "sw": "2024.6"},
        },
    )
    e = found.entity
    assert (e.device_id, e.capability, e.command_topic) == (
        "kitchen",
        "relay:relay",
        "kitchen/switch/relay/command",
    )
    assert e.switch_state(b"1") is True
    assert e.switch_state(b"0") is False
    assert e.availability == (("kitchen/status", "online", "offline"),)
    assert (found.device_name, found.firmware) == ("Kitchen plug", "2024.6")


@pytest.mark.parametrize(
    ("template", "payload", "value"),
    [
        (None, b" 21.5 ", 21.5),
        ("{{ value }}", b"7", 7.0),
        ("{{ value_json.temperature }}", b'{"temperature": 22.25}', 22.25),
        ("{{ value_json['env'].t | float }}", b'{"env": {"t": "19.5"}}', 19.5),
        ("{{ value_json.list[1] | int }}", b'{"list": [1, 2.7]}', 2.0),
        ("{{ value_json.t | round(1) }}", b'{"t": 20.06}', 20.1),
        ("{{ value_json.missing }}", b'{"t": 1}', None),
        ("{{ value_json.t }}", b"not json", None),
    ],
)
def test_the_template_subset(template: str | None, payload: bytes, value: float | None) -> None:
    raw: dict[str, Any] = {"stat_t": "n/s/t/state"}
    if template is not None:
        raw["val_tpl"] = template
    assert announce("sensor", "n", "t", raw).entity.metric(payload) == value


def test_an_unknown_template_leaves_the_entity_without_state() -> None:
    raw = {"stat_t": "n/s/t/state", "val_tpl": "{{ states('sensor.x') }}"}
    assert announce("sensor", "n", "t", raw).entity.template is None


@pytest.mark.parametrize(
    ("component", "raw", "reason"),
    [
        ("sensor", {}, "state_topic is required"),
        ("button", {}, "command_topic is required"),
        ("light", {"cmd_t": "x"}, "not read"),
        ("sensor", {"stat_t": "a/+/b"}, "plain topic"),
        ("sensor", {"stat_t": 5}, "must be a string"),
    ],
)
def test_unusable_foreign_configs_say_why(component: str, raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(consume.ConfigError, match=reason):
        announce(component, "n", "o", raw)


def test_a_foreign_config_cannot_use_the_platforms_topics() -> None:
    reserved = frozenset({"devices", "iotp", "homeassistant", "iotp-ha"})
    for raw in (
        {"stat_t": "devices/VICTIM/data"},
        {"stat_t": "x/y", "avty_t": "iotp/events/device_status/VICTIM"},
        {"stat_t": "x/y", "cmd_t": "iotp-ha/VICTIM/servo/set"},
        {"stat_t": "$SYS/broker/uptime"},
    ):
        with pytest.raises(consume.ConfigError, match="belongs to the platform"):
            consume.announcement("sensor", "n", "o", abbreviations.expand(raw), reserved)


def test_bad_config_payloads_are_refused() -> None:
    for payload in (b"[1]", b"{", b"x" * 20000):
        with pytest.raises(consume.ConfigError):
            consume.load(payload)


def test_platform_commands_become_foreign_payloads() -> None:
    device = consume.Device("plug", "Plug")
    for topic, (component, obj, raw) in {
        "t1": ("switch", "relay", {"cmd_t": "plug/relay/set", "pl_on": "1", "pl_off": "0"}),
        "t2": ("button", "restart", {"cmd_t": "plug/restart", "pl_prs": "GO"}),
        "t3": ("number", "level", {"cmd_t": "plug/level/set", "min": 0, "max": 10}),
    }.items():
        device.entities[topic] = announce(component, "plug", obj, raw).entity
    assert device.capabilities == ["cmd:level", "cmd:restart", "relay:relay"]

    def run(command: str, params: dict[str, Any], known: dict[str, bool] | None = None) -> Any:
        entity, body, result = consume.command_payload(device, command, params, known or {})
        return entity.command_topic, body, result

    assert run("relay", {"name": "relay", "state": "on"}) == (
        "plug/relay/set",
        "1",
        {"name": "relay", "state": True},
    )
    assert run("relay", {"name": "relay", "state": "toggle"}, {"relay": True})[1] == "0"
    assert run("restart", {}) == ("plug/restart", "GO", {})
    assert run("level", {"value": 4}) == ("plug/level/set", "4", {"value": 4.0})
    for command, params, reason in [
        ("level", {"value": 11}, "<= 10"),
        ("level", {}, "must be a number"),
        ("relay", {"name": "pump", "state": "on"}, "no switch"),
        ("launch", {}, "unknown command"),
    ]:
        with pytest.raises(consume.CommandError, match=reason):
            run(command, params)


# ---- Home Assistant's broker account ---------------------------------------------


@pytest.mark.parametrize(
    ("topic", "write", "allowed"),
    [
        ("homeassistant/#", False, True),
        ("homeassistant/sensor/X/temperature/config", False, True),
        ("homeassistant/status", True, True),
        ("homeassistant/sensor/X/temperature/config", True, False),  # cannot forge configs
        ("devices/+/data", False, True),
        ("devices/+/state", False, True),
        ("devices/#", False, False),
        ("devices/X/commands", True, False),  # never a device's commands directly
        ("devices/X/data", True, False),  # nor pose as a device
        ("iotp-ha/+/availability", False, True),
        ("iotp-ha/X/availability", True, False),
        ("iotp-ha/X/relay_light/set", True, True),
        ("iotp-ha/#", True, False),
        ("iotp/events/#", False, False),
        ("#", False, False),
    ],
)
def test_home_assistant_account_acl(topic: str, write: bool, allowed: bool) -> None:
    assert publish.account_allows(TOPICS, topic, write=write) is allowed


def test_a_unit_the_device_declares_wins_over_the_class() -> None:
    declared = DeviceView(
        **{**REFERENCE.__dict__, "units": (("temperature", "°C"), ("humidity", "g/m³"))}
    )
    configs = publish.configs(declared, TOPICS, "0.1.0")
    node = REFERENCE.id
    temperature = configs[f"homeassistant/sensor/{node}/temperature/config"]
    humidity = configs[f"homeassistant/sensor/{node}/humidity/config"]
    assert (temperature["dev_cla"], temperature["unit_of_meas"]) == ("temperature", "°C")
    assert "dev_cla" not in humidity
    assert humidity["unit_of_meas"] == "g/m³"
    for topic, config in configs.items():
        check_config(topic, config)


def test_an_entity_must_stay_within_its_devices_account() -> None:
    acl = {"write": ["homeassistant/+/plug/+/config", "plug/#"], "read": ["plug/#"]}
    config = {"stat_t": "plug/relay", "cmd_t": "plug/relay/set", "avty_t": "plug/status"}
    own = consume.announcement("switch", "plug", "relay", abbreviations.expand(config))
    assert consume.outside_account(own.entity, acl) is None
    for key, topic in (("cmd_t", "other/relay/set"), ("stat_t", "other"), ("avty_t", "x/y")):
        raw = abbreviations.expand({**config, key: topic})
        found = consume.announcement("switch", "plug", "relay", raw)
        assert consume.outside_account(found.entity, acl) == topic


def test_discovery_account_topics_and_overlaps() -> None:
    from iotp.errors import InvalidRequestError
    from iotp.services import discovery_accounts as da
    from iotp.settings import Settings

    settings = Settings(open=True)
    acl = da.account_acl(settings, "plug", "home/plug", "home/plug/set", {"tele"})
    assert acl == {
        "write": ["homeassistant/+/plug/+/config", "home/plug/#"],
        "read": ["home/plug/set/#"],
    }
    for root in ("devices", "homeassistant/x", "iotp-ha", "iotp", "tele/x", "$SYS", "a/+", "a//b"):
        with pytest.raises(InvalidRequestError):
            da.account_acl(settings, "plug", root, "ok", {"tele"})
    assert da.overlaps("home/plug/#", "home/#")
    assert da.overlaps("home/+/x", "home/plug/#")
    assert not da.overlaps("home/plug/#", "home/plugs/#")
    assert not da.overlaps("homeassistant/+/a/+/config", "homeassistant/+/b/+/config")
    assert not da.overlaps("a/b", "a/b/c")
