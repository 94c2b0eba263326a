"""What the platform announces to Home Assistant for one of its devices: pure functions
from the device's description to retained discovery configs, and from a Home Assistant
command back to one of the platform's commands (docs/devices.md#home-assistant).

Configs are published with the short keys (abbreviations.py) and a base topic ``~``;
entity states are read by Home Assistant from the device's own topics (``data``,
``state``), availability from a topic the platform keeps from its presence tracking,
and commands go to a topic of the platform's, never to the device directly: they are
created, sent, acknowledged and kept in history like any other command."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from iotp.protocol.commands import RELAY_STATES
from iotp.protocol.topics import DEVICE_ID_RE, Kind, device_topic

# Marks our own configs (a foreign device is never registered from one of them).
ORIGIN_NAME = "IoT Platform"
UNIQUE_ID_PREFIX = "iotp_"
MANUFACTURER = "IoT Platform"
# The type given to devices registered from Home Assistant discovery: they announce
# themselves to Home Assistant already, so they are not announced again.
FOREIGN_TYPE = "homeassistant"
COMPONENTS = ("sensor", "switch", "number", "button")
AVAILABLE, NOT_AVAILABLE = "online", "offline"
PAYLOAD_ON, PAYLOAD_OFF, PAYLOAD_PRESS = "ON", "OFF", "PRESS"
SERVO_MIN, SERVO_MAX = 0, 180

# Sensor metrics Home Assistant has a device class for (its sensor documentation lists
# the class and the units it accepts for it).
SENSOR_CLASSES: dict[str, tuple[str | None, str | None]] = {
    "temperature": ("temperature", "°C"),
    "humidity": ("humidity", "%"),
    "pressure": ("pressure", "hPa"),
    "illuminance": ("illuminance", "lx"),
    "voltage": ("voltage", "V"),
    "current": ("current", "A"),
    "power": ("power", "W"),
    "energy": ("energy", "kWh"),
    "co2": ("carbon_dioxide", "ppm"),
    "battery": ("battery", "%"),
    "rssi": ("signal_strength", "dBm"),
    # The reference firmware's MQ gas sensor reports a raw reading: no class fits.
    "gas": (None, None),
}
# Capabilities that are not sensor metrics.
NOT_SENSORS = frozenset({"servo", "reboot", "ota", "automation", "webhook"})
OBJECT_RE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class DeviceView:
    """What the configs depend on (a Device row, or an event's fields)."""

    id: str
    name: str
    type: str | None
    firmware: str | None
    capabilities: tuple[str, ...]
    mac: str | None = None
    units: tuple[tuple[str, str], ...] = ()  # what the device declares per metric


@dataclass(frozen=True)
class Topics:
    prefix: str  # Home Assistant's discovery prefix
    root: str  # the platform's own topics for Home Assistant

    def config(self, component: str, node: str, obj: str) -> str:
        return f"{self.prefix}/{component}/{node}/{obj}/config"

    def base(self, node: str) -> str:
        return f"{self.root}/{node}"

    def availability(self, node: str) -> str:
        return f"{self.root}/{node}/availability"

    def command(self, node: str, obj: str) -> str:
        return f"{self.root}/{node}/{obj}/set"

    def command_subscription(self) -> str:
        return f"{self.root}/+/+/set"

    def availability_subscription(self) -> str:
        return f"{self.root}/+/availability"

    def birth(self) -> str:
        """Home Assistant announces itself here (``online``) after it starts."""
        return f"{self.prefix}/status"

    def config_subscriptions(self) -> list[str]:
        # With and without the optional node id level.
        return [f"{self.prefix}/+/+/+/config", f"{self.prefix}/+/+/config"]

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """(device id, object id) of ``{root}/{id}/{object}/set``, or None."""
        head = f"{self.root}/"
        if not topic.startswith(head) or not topic.endswith("/set"):
            return None
        parts = topic[len(head) : -len("/set")].split("/")
        if len(parts) != 2 or DEVICE_ID_RE.fullmatch(parts[0]) is None or not parts[1]:
            return None
        return parts[0], parts[1]


def object_id(name: str) -> str:
    """An object id Home Assistant accepts ([a-zA-Z0-9_-])."""
    return OBJECT_RE.sub("_", name)


def _template(expression: str) -> str:
    """A Home Assistant (Jinja) value template of one expression."""
    return "{{ " + expression + " }}"


def _device_block(device: DeviceView) -> dict[str, Any]:
    block: dict[str, Any] = {
        "ids": [f"{UNIQUE_ID_PREFIX}{device.id}"],
        "name": device.name,
        "mf": MANUFACTURER,
    }
    if device.type:
        block["mdl"] = device.type
    if device.firmware:
        block["sw"] = device.firmware
    if device.mac:
        block["cns"] = [["mac", device.mac.lower()]]
    return block


def configs(device: DeviceView, topics: Topics, version: str) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config, for every entity the device's capabilities give."""
    common: dict[str, Any] = {
        "~": topics.base(device.id),
        "avty_t": "~/availability",
        "pl_avail": AVAILABLE,
        "pl_not_avail": NOT_AVAILABLE,
        "dev": _device_block(device),
        "o": {"name": ORIGIN_NAME, "sw": version},
    }
    data = device_topic(device.id, Kind.DATA)
    state = device_topic(device.id, Kind.STATE)
    out: dict[str, dict[str, Any]] = {}

    def add(component: str, obj: str, name: str, fields: dict[str, Any]) -> None:
        out[topics.config(component, device.id, obj)] = {
            "name": name,
            "uniq_id": f"{UNIQUE_ID_PREFIX}{device.id}_{obj}",
            **fields,
            **common,
        }

    for cap in device.capabilities:
        if cap.startswith("relay:"):
            relay = cap.split(":", 1)[1]
            obj = object_id(f"relay_{relay}")
            add(
                "switch",
                obj,
                relay.replace("_", " ").capitalize(),
                {
                    "cmd_t": f"~/{obj}/set",
                    "stat_t": state,
                    # Absent from a state message: HA's template yields '' and keeps
                    # the switch as it was.
                    "val_tpl": _template(
                        f"('ON' if value_json.relays[{relay!r}] else 'OFF') "
                        f"if value_json.relays is defined and {relay!r} in value_json.relays "
                        "else ''"
                    ),
                    "pl_on": PAYLOAD_ON,
                    "pl_off": PAYLOAD_OFF,
                },
            )
        elif cap == "servo":
            add(
                "number",
                "servo",
                "Servo",
                {
                    "cmd_t": "~/servo/set",
                    "stat_t": state,
                    "val_tpl": _template("value_json.servo"),
                    "min": SERVO_MIN,
                    "max": SERVO_MAX,
                    "step": 1,
                    "unit_of_meas": "°",
                    "mode": "slider",
                },
            )
        elif cap == "reboot":
            add(
                "button",
                "reboot",
                "Reboot",
                {
                    "cmd_t": "~/reboot/set",
                    "pl_prs": PAYLOAD_PRESS,
                    "dev_cla": "restart",
                    "ent_cat": "config",
                },
            )
        elif ":" not in cap and cap not in NOT_SENSORS:
            obj = object_id(cap)
            device_class, unit = SENSOR_CLASSES.get(cap, (None, None))
            declared = dict(device.units).get(cap)
            if declared is not None and declared != unit:
                # Home Assistant refuses a device class with a unit it does not list for
                # it: the device's own unit wins, without a class.
                device_class, unit = None, declared or None
            fields: dict[str, Any] = {
                "stat_t": data,
                "val_tpl": _template(f"value_json[{cap!r}]"),
                "stat_cla": "measurement",
            }
            if device_class:
                fields["dev_cla"] = device_class
            if unit:
                fields["unit_of_meas"] = unit
            add("sensor", obj, cap.replace("_", " ").capitalize(), fields)
    return out


class CommandError(ValueError):
    """A Home Assistant command the platform cannot turn into one of its own."""


def to_command(
    obj: str, payload: bytes, capabilities: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """(command, params) for a payload on ``{root}/{id}/{object}/set``; the command's
    own checks (services.commands.validate) run after this."""
    text = payload.decode("utf-8", "replace").strip()
    if obj == "reboot":
        if text != PAYLOAD_PRESS:
            raise CommandError(f"reboot: expected {PAYLOAD_PRESS!r}, got {text[:32]!r}")
        return "reboot", {}
    if obj == "servo":
        try:
            value = float(text)
        except ValueError:
            raise CommandError(f"servo: expected a number, got {text[:32]!r}") from None
        if not value.is_integer():
            raise CommandError(f"servo: expected a whole angle, got {text[:32]!r}")
        return "servo", {"angle": int(value)}
    for cap in capabilities:
        if cap.startswith("relay:") and object_id(f"relay_{cap[6:]}") == obj:
            state = RELAY_STATES.get(text.lower())
            if state is None:
                raise CommandError(f"{obj}: expected ON, OFF or TOGGLE, got {text[:32]!r}")
            return "relay", {"name": cap[6:], "state": state}
    raise CommandError(f"no entity {obj!r} on this device")


# ---- Home Assistant's broker account -----------------------------------------------

READ, WRITE = "read", "write"


def account_acl(topics: Topics) -> list[tuple[str, str]]:
    """(access, topic filter) for Home Assistant's own broker account: it reads the
    discovery configs, the devices' readings and state and their availability, and
    writes only its birth message and the platform's command topics (never a device's
    own topics: its commands go through the platform)."""
    return [
        (READ, f"{topics.prefix}/#"),
        (WRITE, topics.birth()),
        (READ, device_topic("+", Kind.DATA)),
        (READ, device_topic("+", Kind.STATE)),
        (READ, topics.availability_subscription()),
        (WRITE, topics.command_subscription()),
    ]


def covers(allowed: str, requested: str) -> bool:
    """Whether the filter ``allowed`` takes in every topic ``requested`` (a topic or a
    subscription filter) can match."""
    a, r = allowed.split("/"), requested.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(r):
            return False
        if level == "+":
            if r[i] == "#":
                return False
            continue
        if level != r[i]:
            return False
    return len(a) == len(r)


def account_allows(topics: Topics, topic: str, write: bool) -> bool:
    wanted = WRITE if write else READ
    return any(
        access == wanted and covers(allowed, topic) for access, allowed in account_acl(topics)
    )
