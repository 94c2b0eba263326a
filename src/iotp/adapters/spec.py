"""The mapping format: how a foreign firmware's topics and payloads become the platform's
device messages (docs/devices.md, "Mapping format"). Pure data, validated by pydantic;
the engine (iotp.adapters.engine) runs it.

A mapping never names a device by anything but its topic: the device id is a template
over the topic's captures, so a broker ACL that limits an account to its own topics
limits it to its own devices too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iotp.protocol.payloads import NAME_RE

MAPPING_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
# Topic roots a mapping may never read: the platform's own device protocol, provisioning,
# the platform's events and control requests, and the broker's.
RESERVED_ROOTS = frozenset({"devices", "provision", "iotp", "$SYS", "$share"})
_CAPTURE_RE = re.compile(r"^\{([a-z_][a-z0-9_]*)(\+?)\}$")
_TEMPLATE_VAR_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_RULES = 64

TopicPattern = Annotated[str, Field(min_length=1, max_length=256)]
Template = Annotated[str, Field(min_length=1, max_length=256)]
JsonPath = Annotated[str, Field(min_length=1, max_length=128)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def template_vars(template: str) -> set[str]:
    return set(_TEMPLATE_VAR_RE.findall(template))


class TopicSegment(_Spec):
    literal: str | None = None
    capture: str | None = None
    rest: bool = False  # the capture takes this and every following level (``{name+}``)


def parse_pattern(pattern: str) -> list[TopicSegment]:
    """``tele/{topic}/SENSOR`` -> segments; ``{name+}`` captures one or more levels."""
    segments: list[TopicSegment] = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        match = _CAPTURE_RE.fullmatch(part)
        if match is not None:
            segments.append(TopicSegment(capture=match.group(1), rest=bool(match.group(2))))
            continue
        if not part or any(c in part for c in "+#{}"):
            raise ValueError(
                f"topic {pattern!r}: segment {i + 1} ({part!r}) is neither text nor {{name}}"
            )
        segments.append(TopicSegment(literal=part))
    if not any(s.literal for s in segments):
        raise ValueError(f"topic {pattern!r} needs at least one fixed segment")
    first = segments[0]
    if first.literal is not None and (
        first.literal in RESERVED_ROOTS or first.literal.startswith("$")
    ):
        raise ValueError(
            f"topic {pattern!r}: {first.literal!r} topics belong to the platform or broker"
        )
    return segments


def subscription_filter(segments: list[TopicSegment]) -> str:
    out: list[str] = []
    for seg in segments:
        if seg.literal is not None:
            out.append(seg.literal)
        elif seg.rest:
            out.append("#")
            break
        else:
            out.append("+")
    return "/".join(out)


class MetricField(_Spec):
    """One metric taken from a payload path."""

    path: JsonPath
    unit: str | None = Field(default=None, max_length=16)
    scale: float = 1.0


class DataSpec(_Spec):
    """Telemetry: numbers become metrics (with units), other top-level values attributes."""

    # Every numeric leaf becomes a metric named by its path (``ENERGY.Power``).
    flatten: bool = False
    # Explicit metrics: our name -> payload path (or path with unit and scale).
    fields: dict[str, JsonPath | MetricField] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list, max_length=64)
    # Units by metric name or by its last path part (``Temperature``: every sensor's).
    units: dict[str, Annotated[str, Field(max_length=16)]] = Field(default_factory=dict)
    # Put in front of every metric name (a template over the topic's captures).
    prefix: str = Field(default="", max_length=32)
    # Non-numeric top-level values are kept as attributes of the sample.
    attributes: bool = True

    @field_validator("fields")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if NAME_RE.fullmatch(name) is None:
                raise ValueError(f"metric name {name!r} must match {NAME_RE.pattern}")
        return value


class StatusSpec(_Spec):
    """Availability: a payload (text, or the value at ``path`` of a JSON object)."""

    path: JsonPath | None = None
    online: list[str] = Field(min_length=1, max_length=8)
    offline: list[str] = Field(min_length=1, max_length=8)
    # The presence of a bridge carrying the mapping's devices (Zigbee2MQTT's bridge/state,
    # its last will): offline takes every device of the mapping offline with it; they come
    # back with their own availability, which the bridge publishes again when it returns.
    bridge: bool = False


class RelaySpec(_Spec):
    """Relays in a payload: keys matching ``keys`` (a regular expression), or the value at
    ``path``; named ``name`` (a template: ``{key}`` and the topic's captures)."""

    keys: str | None = Field(default=None, max_length=128)
    path: JsonPath | None = None
    name: Template = "{key}"
    on: list[Any] = Field(default_factory=lambda: ["ON", True], max_length=8)
    off: list[Any] = Field(default_factory=lambda: ["OFF", False], max_length=8)

    @model_validator(mode="after")
    def _one_source(self) -> RelaySpec:
        if (self.keys is None) == (self.path is None):
            raise ValueError("a relay spec takes either keys or path")
        if self.keys is not None:
            re.compile(self.keys)
        return self


class InfoSpec(_Spec):
    """Registration details found in a payload: our info field -> payload path."""

    firmware: JsonPath | None = None
    ip: JsonPath | None = None
    rssi: JsonPath | None = None
    model: JsonPath | None = None


class AckSpec(_Spec):
    """Command results. ``by: id``: the payload carries the command's id (at ``id``), a
    result (``result``) or an error (``error``). ``by: key``: the payload reports the key a
    command waits for (its ``expect``); ``error_key``/``error_values`` mark a refusal of the
    oldest command waiting."""

    by: Literal["id", "key"]
    id: JsonPath = "id"
    result: JsonPath = "result"
    error: JsonPath = "error"
    error_key: str | None = None
    error_values: list[str] = Field(default_factory=list, max_length=16)


class RegistrySpec(_Spec):
    """A list of devices behind a bridge (Zigbee2MQTT's ``bridge/devices``): each entry
    registers ``device`` with its ``capture`` filled from ``name``."""

    capture: str
    name: JsonPath
    skip: dict[str, Any] = Field(default_factory=dict)
    info: InfoSpec = InfoSpec()


class Rule(_Spec):
    topic: TopicPattern
    # The topic's messages are expected and dropped (e.g. the platform's own commands).
    ignore: bool = False
    payload: Literal["json", "text"] = "json"
    data: DataSpec | None = None
    status: StatusSpec | None = None
    relays: RelaySpec | None = None
    info: InfoSpec | None = None
    ack: AckSpec | None = None
    registry: RegistrySpec | None = None

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        parse_pattern(value)
        return value

    @property
    def captures(self) -> set[str]:
        return {s.capture for s in parse_pattern(self.topic) if s.capture}


class CommandOut(_Spec):
    """One command as the firmware takes it. ``topic`` and ``payload`` are templates over
    the device's captures and the command: ``{relay}`` (the relay name), ``{state}``
    (``on``/``off``/``toggle``), ``{STATE}`` (upper case), ``{on}`` (true/false), ``{command_id}``
    (the command id) and the groups of ``relay_pattern``. A JSON payload's string that is
    exactly one ``{name}`` takes that value's type. ``expect``: the key whose report
    acknowledges it (see AckSpec); without, the firmware reports no result."""

    topic: Template
    payload: Any = ""
    payload_toggle: Any = None
    expect: Template | None = None
    relay_pattern: str | None = Field(default=None, max_length=128)


class AccountSpec(_Spec):
    """The broker account a foreign client gets from an admin: the topics it may publish
    and read, templates over ``{scope}`` (e.g. the Tasmota topic). No scope: the account
    covers fixed topics (a Zigbee2MQTT bridge's base topic)."""

    scope: str | None = Field(default=None, max_length=32)
    write: list[Template] = Field(min_length=1, max_length=16)
    read: list[Template] = Field(default_factory=list, max_length=16)


class Mapping(_Spec):
    name: Annotated[str, Field(pattern=MAPPING_NAME_PATTERN)]
    title: str = Field(default="", max_length=64)
    description: str = Field(default="", max_length=1024)
    # The platform device id: a template over the rules' captures, e.g. ``tasmota-{topic}``.
    device_id: Template
    device_name: Template | None = None
    type: str = Field(default="", max_length=64)
    # Seconds between the firmware's periodic reports (presence times out after
    # IOTP_OFFLINE_MISSED_REPORTS of them).
    interval: float = Field(default=60.0, gt=0, le=86400)
    capabilities: list[str] = Field(default_factory=list, max_length=32)
    # Why OTA updates do not apply (the API's refusal names it).
    ota: str = Field(default="", max_length=256)
    rules: list[Rule] = Field(min_length=1, max_length=MAX_RULES)
    commands: dict[str, CommandOut] = Field(default_factory=dict)
    account: AccountSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        id_vars = template_vars(self.device_id)
        if not id_vars:
            raise ValueError("device_id must use a topic capture, e.g. 'tasmota-{topic}'")
        literal = _TEMPLATE_VAR_RE.sub("", self.device_id)
        if not literal:
            raise ValueError(
                "device_id needs fixed text beside the capture (e.g. 'tasmota-{topic}'), so "
                "mapped devices cannot take the ids of the platform's own devices"
            )
        for rule in self.rules:
            if rule.ignore or (rule.status is not None and rule.status.bridge):
                continue
            have = rule.captures
            if rule.registry is not None:
                have = have | {rule.registry.capture}
            missing = id_vars - have
            if missing:
                raise ValueError(
                    f"rule {rule.topic!r} lacks the capture(s) {sorted(missing)} of device_id"
                )
        for name, cmd in self.commands.items():
            if cmd.relay_pattern is not None:
                re.compile(cmd.relay_pattern)
            if NAME_RE.fullmatch(name) is None:
                raise ValueError(f"command name {name!r} must match {NAME_RE.pattern}")
        return self

    @property
    def id_prefix(self) -> str:
        """The fixed text before the first capture of ``device_id``."""
        return self.device_id.split("{", 1)[0]
