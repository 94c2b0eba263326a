"""Devices that announce themselves with Home Assistant discovery (ESPHome, Tasmota in
Home Assistant mode, hand-written sketches): pure functions from their discovery
configs to the platform's view of them (docs/devices.md#home-assistant).

One config is one entity. What the platform makes of each:

| component | capability | state topic | command topic |
|---|---|---|---|
| ``sensor`` (numeric) | the metric's name | a metric | - |
| ``binary_sensor`` | the metric's name | a metric, 1 or 0 | - |
| ``switch`` | ``relay:<object>`` | the relay in the reported state | ``relay`` |
| ``number`` | ``cmd:<object>`` | a metric | custom command, ``{"value": x}`` |
| ``button`` | ``cmd:<object>`` | - | custom command |

Values are read with a small subset of Home Assistant's templates: ``{{ value }}`` and
``{{ value_json.a.b }}`` / ``{{ value_json['a'] }}``, with optional ``| float``,
``| int`` or ``| round(n)`` filters. An entity whose template is anything else is
registered without its state (counted, logged)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from iotp.homeassistant.abbreviations import expand
from iotp.homeassistant.publish import ORIGIN_NAME, UNIQUE_ID_PREFIX, covers, object_id
from iotp.protocol.payloads import NAME_RE
from iotp.protocol.topics import DEVICE_ID_RE

SUPPORTED = ("sensor", "binary_sensor", "switch", "number", "button")
MAX_CONFIG_BYTES = 16 * 1024
_PATH = r"(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*'[^']*'\s*\]|\[\s*\"[^\"]*\"\s*\]|\[\s*\d+\s*\])*"
_TEMPLATE = re.compile(
    r"^\{\{\s*(value_json" + _PATH + r"|value)\s*"
    r"((?:\|\s*(?:float|int|round\(\s*\d+\s*\)|string|trim)\s*)*)\}\}$"
)
_STEP = re.compile(
    r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(\d+)\s*\]"
)


class ConfigError(ValueError):
    """A discovery config the platform cannot use; the message says why."""


@dataclass(frozen=True)
class Template:
    """A compiled value template: a path into the payload's JSON (None: the payload
    itself) and the filters applied to it."""

    path: tuple[str | int, ...] | None
    filters: tuple[str, ...]

    def render(self, payload: bytes) -> Any:
        """The value, or None when the payload does not hold it."""
        if self.path is None:
            value: Any = payload.decode("utf-8", "replace").strip()
        else:
            try:
                value = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            for step in self.path:
                if isinstance(step, int):
                    if not isinstance(value, list) or step >= len(value):
                        return None
                elif not isinstance(value, dict) or step not in value:
                    return None
                value = value[step]
        for f in self.filters:
            if f in ("float", "int") or f.startswith("round"):
                number = _number(value)
                if number is None:
                    return None
                value = number
                if f == "int":
                    value = int(value)
                elif f.startswith("round"):
                    value = round(value, int(f[6:-1].strip()))
            else:  # string, trim
                value = str(value).strip()
        return value


IDENTITY = Template(None, ())


def compile_template(text: str | None) -> Template | None:
    """None when the template is outside the subset read here."""
    if text is None or text == "":
        return IDENTITY
    match = _TEMPLATE.fullmatch(text.strip())
    if match is None:
        return None
    head, filters = match.group(1), match.group(2)
    path: tuple[str | int, ...] | None = None
    if head.startswith("value_json"):
        steps: list[str | int] = []
        for m in _STEP.finditer(head[len("value_json") :]):
            attr, single, double, index = m.groups()
            steps.append(int(index) if index is not None else (attr or single or double or ""))
        path = tuple(steps)
    names = tuple(f.strip().replace(" ", "") for f in filters.split("|") if f.strip())
    return Template(path, names)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Entity:
    component: str
    device_id: str
    object: str  # metric, relay or custom command name
    name: str
    state_topic: str | None
    template: Template | None
    command_topic: str | None
    payload_on: str = "ON"
    payload_off: str = "OFF"
    state_on: str = "ON"
    state_off: str = "OFF"
    payload_press: str = "PRESS"
    minimum: float | None = None
    maximum: float | None = None
    availability: tuple[tuple[str, str, str], ...] = ()  # (topic, available, not available)

    @property
    def capability(self) -> str:
        if self.component == "switch":
            return f"relay:{self.object}"
        if self.component in ("number", "button"):
            return f"cmd:{self.object}"
        return self.object

    def metric(self, payload: bytes) -> float | None:
        """The reading on ``state_topic`` as a metric (sensor, binary sensor, number)."""
        if self.template is None:
            return None
        value = self.template.render(payload)
        if self.component == "binary_sensor":
            text = str(value).strip() if value is not None else None
            if text == self.payload_on:
                return 1.0
            if text == self.payload_off:
                return 0.0
            return None
        return _number(value)

    def switch_state(self, payload: bytes) -> bool | None:
        if self.template is None:
            return None
        value = self.template.render(payload)
        text = str(value).strip() if value is not None else None
        if text == self.state_on:
            return True
        if text == self.state_off:
            return False
        return None


@dataclass
class Device:
    """A foreign device: what its configs have said so far."""

    id: str
    name: str
    model: str | None = None
    firmware: str | None = None
    entities: dict[str, Entity] = field(default_factory=dict)  # discovery topic -> entity

    @property
    def capabilities(self) -> list[str]:
        return sorted({e.capability for e in self.entities.values()})


@dataclass(frozen=True)
class Announcement:
    entity: Entity
    device_name: str
    model: str | None
    firmware: str | None


def parse_config_topic(prefix: str, topic: str) -> tuple[str, str | None, str] | None:
    """(component, node id or None, object id) of a discovery topic."""
    head = f"{prefix}/"
    if not topic.startswith(head) or not topic.endswith("/config"):
        return None
    parts = topic[len(head) : -len("/config")].split("/")
    if len(parts) == 2:
        return parts[0], None, parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def is_ours(config: dict[str, Any]) -> bool:
    origin = config.get("origin")
    unique = config.get("unique_id")
    return (
        isinstance(origin, dict)
        and origin.get("name") == ORIGIN_NAME
        and isinstance(unique, str)
        and unique.startswith(UNIQUE_ID_PREFIX)
    )


def load(payload: bytes) -> dict[str, Any]:
    """The config with its keys made long; ConfigError when it is not a JSON object."""
    if len(payload) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("not a JSON object")
    return expand(raw)


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def _device_id(node: str | None, obj: str, device: dict[str, Any]) -> str:
    ids = device.get("identifiers")
    first = ids[0] if isinstance(ids, list) and ids else ids
    for candidate in (node, first if isinstance(first, str) else None, obj):
        if candidate:
            cleaned = object_id(candidate)[:64]
            if DEVICE_ID_RE.fullmatch(cleaned):
                return cleaned
    raise ConfigError("no usable device id (node id, device identifiers or object id)")


def _name(raw: str, component: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:64]
    if NAME_RE.fullmatch(cleaned) is None:
        raise ConfigError(f"{component}: no usable name in {raw!r}")
    return cleaned


def _availability(config: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    available = _text(config.get("payload_available"), "online")
    not_available = _text(config.get("payload_not_available"), "offline")
    out: list[tuple[str, str, str]] = []
    if isinstance(config.get("availability_topic"), str):
        out.append((config["availability_topic"], available, not_available))
    out.extend(
        (
            entry["topic"],
            _text(entry.get("payload_available"), available),
            _text(entry.get("payload_not_available"), not_available),
        )
        for entry in config.get("availability") or ()
        if isinstance(entry, dict) and isinstance(entry.get("topic"), str)
    )
    return tuple(out)


def _float(value: Any) -> float | None:
    return _number(value) if value is not None else None


def announcement(
    component: str,
    node: str | None,
    obj: str,
    config: dict[str, Any],
    reserved: frozenset[str] = frozenset(),
) -> Announcement:
    """The entity a (long-keyed) config describes; ConfigError when unusable.
    ``reserved``: first topic levels a foreign device may not use (the platform's own
    device, event and Home Assistant topics: a config must not turn them into another
    device's readings or commands)."""
    if component not in SUPPORTED:
        raise ConfigError(f"component {component!r} is not read (only {', '.join(SUPPORTED)})")
    device = config.get("device") if isinstance(config.get("device"), dict) else {}
    assert isinstance(device, dict)
    device_id = _device_id(node, obj, device)
    state_topic = config.get("state_topic")
    command_topic = config.get("command_topic")
    if state_topic is not None and not isinstance(state_topic, str):
        raise ConfigError("state_topic must be a string")
    if command_topic is not None and not isinstance(command_topic, str):
        raise ConfigError("command_topic must be a string")
    availability = _availability(config)
    for topic in (state_topic, command_topic, *(a[0] for a in availability)):
        if topic is not None and ("+" in topic or "#" in topic or not topic):
            raise ConfigError(f"topic {topic!r} is not a plain topic")
        if topic is not None and (topic.split("/")[0] in reserved or topic.startswith("$")):
            raise ConfigError(f"topic {topic!r} belongs to the platform or the broker")
    if component in ("sensor", "binary_sensor") and state_topic is None:
        raise ConfigError(f"{component}: state_topic is required")
    if component in ("number", "button") and command_topic is None:
        raise ConfigError(f"{component}: command_topic is required")
    entity_name = _text(config.get("name"), obj) or obj
    # The object id names the metric/relay/command: stable, unlike a display name.
    entity = Entity(
        component=component,
        device_id=device_id,
        object=_name(obj, component),
        name=entity_name,
        state_topic=state_topic,
        template=compile_template(config.get("value_template")) if state_topic else None,
        command_topic=command_topic,
        payload_on=_text(config.get("payload_on"), "ON"),
        payload_off=_text(config.get("payload_off"), "OFF"),
        state_on=_text(config.get("state_on"), _text(config.get("payload_on"), "ON")),
        state_off=_text(config.get("state_off"), _text(config.get("payload_off"), "OFF")),
        payload_press=_text(config.get("payload_press"), "PRESS"),
        minimum=_float(config.get("min")),
        maximum=_float(config.get("max")),
        availability=availability,
    )
    model = device.get("model")
    firmware = device.get("sw_version")
    return Announcement(
        entity=entity,
        device_name=_text(device.get("name"), device_id)[:128] or device_id,
        model=model[:64] if isinstance(model, str) else None,
        firmware=firmware[:64] if isinstance(firmware, str) else None,
    )


def outside_account(entity: Entity, acl: dict[str, list[str]]) -> str | None:
    """The first of the entity's topics its device's broker account does not have, if
    any: it must publish its state and availability, and read its command topic."""
    wanted = [(t, "write") for t in (entity.state_topic, *(a[0] for a in entity.availability))]
    wanted.append((entity.command_topic, "read"))
    for topic, access in wanted:
        if topic is not None and not any(covers(f, topic) for f in acl.get(access, ())):
            return topic
    return None


class CommandError(ValueError):
    """A platform command this device's entities cannot carry out."""


def command_payload(
    device: Device, command: str, params: dict[str, Any], known_on: dict[str, bool]
) -> tuple[Entity, str, Any]:
    """(entity, payload for its command topic, result for the ack)."""
    if command == "relay":
        name = params.get("name")
        for e in device.entities.values():
            if e.component == "switch" and e.object == name and e.command_topic:
                state = params.get("state")
                if state == "toggle":
                    state = "off" if known_on.get(e.object) else "on"
                if state not in ("on", "off"):
                    raise CommandError(f"relay: state must be on, off or toggle, not {state!r}")
                payload = e.payload_on if state == "on" else e.payload_off
                return e, payload, {"name": name, "state": state == "on"}
        raise CommandError(f"relay: no switch {name!r} with a command topic")
    for e in device.entities.values():
        if e.object != command or e.component not in ("number", "button"):
            continue
        if e.component == "button":
            return e, e.payload_press, {}
        value = _number(params.get("value"))
        if value is None:
            raise CommandError(f"{command}: params.value must be a number")
        if e.minimum is not None and value < e.minimum:
            raise CommandError(f"{command}: value must be >= {e.minimum:g}")
        if e.maximum is not None and value > e.maximum:
            raise CommandError(f"{command}: value must be <= {e.maximum:g}")
        text = str(int(value)) if value.is_integer() else str(value)
        return e, text, {"value": value}
    raise CommandError(f"unknown command {command!r} for this device")
