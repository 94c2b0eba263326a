"""Runs mappings: a foreign message in, the platform's own device messages out
(``devices/{id}/info|data|status|state|ack``), which then take the worker's ordinary
ingest path; a platform command in, the firmware's command out.

Pure logic, no I/O: the worker feeds it what the broker delivers, the API's dry run a
sample. Mappings can be added and removed while it runs (``add``/``remove``).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from iotp.adapters.spec import (
    RESERVED_ROOTS,
    AckSpec,
    CommandOut,
    DataSpec,
    InfoSpec,
    Mapping,
    RegistrySpec,
    RelaySpec,
    Rule,
    StatusSpec,
    TopicSegment,
    parse_pattern,
    subscription_filter,
)
from iotp.protocol.payloads import MAX_FIELDS, MAX_PAYLOAD_BYTES, NAME_RE
from iotp.protocol.topics import DEVICE_ID_RE, TOPIC_ROOT

# A bridge's device list (Zigbee2MQTT's bridge/devices) may be far larger than a
# device's message; the brokers' packet limit still bounds it.
MAX_REGISTRY_BYTES = 256 * 1024
# A command waiting for the firmware's report of its key is forgotten after this.
PENDING_SECONDS = 600.0
MAX_PENDING_PER_DEVICE = 32
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_WHOLE_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Native = tuple[str, bytes]  # a platform device message: (topic, payload)


class MappingError(ValueError):
    """A foreign message the mapping cannot take; ``reason`` is the rejection counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Translation:
    """What one foreign message became."""

    mapping: str | None = None
    rule: str | None = None
    device_ids: list[str] = field(default_factory=list)
    messages: list[Native] = field(default_factory=list)
    ignored: bool = False
    # Reports of keys commands are acknowledged by, for commands this engine holds no
    # expectation of (another worker published them): see ``KeyReport``.
    reports: list[KeyReport] = field(default_factory=list)


@dataclass
class KeyReport:
    """A firmware's report of keys a command is acknowledged by (Tasmota's RESULT, a
    Zigbee2MQTT device's state). With several workers the command may have been
    published by another one, which alone holds the expectation in memory: the worker
    then settles the device's open commands against this report (``settle``)."""

    device_id: str
    values: dict[str, Any]
    relays: dict[str, bool]
    # Commands acknowledged from this engine's own expectations, not to be acked twice.
    settled: set[str] = field(default_factory=set)


@dataclass
class Binding:
    """A mapped device: which mapping speaks for it, and its topic's captures."""

    mapping: str
    values: dict[str, str]
    capabilities: set[str] = field(default_factory=set)
    units: dict[str, str] = field(default_factory=dict)
    relays: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    info_sent: bytes | None = None
    info_key: tuple[Any, ...] | None = None
    pending: deque[tuple[str, str, float]] = field(default_factory=deque)
    # Met in a message, not read back from the database: what the platform stored of
    # the device (another worker may have registered it, and seen more) is not in it yet.
    fresh: bool = False


@dataclass(frozen=True)
class _Compiled:
    mapping: Mapping
    rule: Rule
    segments: tuple[TopicSegment, ...]


def sanitize_id(value: str) -> str:
    return _BAD_ID_CHARS.sub("_", value)


def render(template: str, values: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise MappingError("bad_template", f"{{{name}}} is not known here")
        value = values[name]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _VAR.sub(one, template)


def render_payload(template: Any, values: dict[str, Any]) -> Any:
    """A JSON payload template: a string that is exactly ``{name}`` takes the value (and
    its type); other strings are formatted; lists and objects (keys too) recursively."""
    if isinstance(template, str):
        whole = _WHOLE_VAR.fullmatch(template)
        if whole is not None and whole.group(1) in values:
            return values[whole.group(1)]
        return render(template, values)
    if isinstance(template, dict):
        return {render(str(k), values): render_payload(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render_payload(v, values) for v in template]
    return template


def lookup(obj: Any, path: str) -> Any:
    """``a.b.0.c`` in nested objects and lists; None when absent."""
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


def _match(segments: tuple[TopicSegment, ...], parts: list[str]) -> dict[str, str] | None:
    captures: dict[str, str] = {}
    i = 0
    for n, seg in enumerate(segments):
        if seg.rest:
            after = len(segments) - n - 1
            end = len(parts) - after
            if end <= i:
                return None
            captures[seg.capture or ""] = "/".join(parts[i:end])
            i = end
            continue
        if i >= len(parts):
            return None
        part = parts[i]
        if seg.literal is not None:
            if part != seg.literal:
                return None
        else:
            if not part:
                return None
            captures[seg.capture or ""] = part
        i += 1
    return captures if i == len(parts) else None


class AdapterEngine:
    """The mappings in force and what they have learnt about their devices.

    ``claimed(device_id)`` (optional) says an id already belongs to a device that no
    mapping speaks for: a mapped message for it is refused (``adapter_id_taken``), so a
    foreign client cannot speak for one of the platform's own devices."""

    def __init__(
        self,
        mappings: Iterable[Mapping] = (),
        *,
        claimed: Callable[[str], bool] | None = None,
    ) -> None:
        self._mappings: dict[str, Mapping] = {}
        self._by_root: dict[str, list[_Compiled]] = {}
        self._wild: list[_Compiled] = []
        self.devices: dict[str, Binding] = {}
        self.claimed = claimed
        for mapping in mappings:
            self.add(mapping)

    # ---- the mappings ------------------------------------------------------------------

    @property
    def mappings(self) -> dict[str, Mapping]:
        return dict(self._mappings)

    def add(self, mapping: Mapping) -> list[str]:
        """Add or replace a mapping; returns the topic filters to subscribe to."""
        self._mappings[mapping.name] = mapping
        self._reindex()
        return self.filters(mapping.name)

    def remove(self, name: str) -> list[str]:
        """Returns the topic filters no other mapping needs any more."""
        before = set(self.subscriptions())
        self._mappings.pop(name, None)
        self._reindex()
        return sorted(before - set(self.subscriptions()))

    def filters(self, name: str) -> list[str]:
        mapping = self._mappings.get(name)
        if mapping is None:
            return []
        return _minimal({subscription_filter(parse_pattern(rule.topic)) for rule in mapping.rules})

    def subscriptions(self) -> list[str]:
        found: set[str] = set()
        for name in self._mappings:
            found.update(self.filters(name))
        return _minimal(found)

    def _reindex(self) -> None:
        self._by_root = {}
        self._wild = []
        for mapping in self._mappings.values():
            for rule in mapping.rules:
                compiled = _Compiled(mapping, rule, tuple(parse_pattern(rule.topic)))
                first = compiled.segments[0]
                if first.literal is not None:
                    self._by_root.setdefault(first.literal, []).append(compiled)
                else:
                    self._wild.append(compiled)

    def bind(
        self,
        device_id: str,
        mapping: str,
        values: dict[str, str],
        capabilities: Iterable[str] = (),
        units: dict[str, str] | None = None,
    ) -> None:
        """A device a mapping registered earlier (the worker reads them back at start).
        Its stored capabilities and units seed the binding: the next info replaces them,
        and must not lose the relays and readings this engine has not seen yet."""
        binding = self.devices.get(device_id)
        if binding is None:
            self.devices[device_id] = Binding(
                mapping, dict(values), capabilities=set(capabilities), units=dict(units or {})
            )

    def fresh(self, device_id: str) -> bool:
        binding = self.devices.get(device_id)
        return binding is not None and binding.fresh

    def seed(
        self, device_id: str, capabilities: Iterable[str], units: dict[str, str] | None
    ) -> None:
        """What the platform stored of a device met fresh in a message joins what this
        engine has seen, and the next info (``info_now``) is made of both. An info
        replaces the stored capabilities, so one built only from this engine's messages
        would drop a relay another worker saw."""
        binding = self.devices.get(device_id)
        if binding is None or not binding.fresh:
            return
        binding.fresh = False
        binding.capabilities.update(capabilities)
        for metric, unit in (units or {}).items():
            binding.units.setdefault(metric, unit)
        binding.info_key = binding.info_sent = None

    def info_now(self, device_id: str) -> Native | None:
        """The device's info if it differs from the last one given out."""
        binding = self.devices.get(device_id)
        mapping = self._mappings.get(binding.mapping) if binding is not None else None
        if binding is None or mapping is None:
            return None
        return self._info(mapping, device_id, binding)

    def owner(self, device_id: str) -> str | None:
        binding = self.devices.get(device_id)
        return binding.mapping if binding is not None else None

    def forget(self, device_id: str) -> None:
        self.devices.pop(device_id, None)

    # ---- foreign messages in ---------------------------------------------------------

    def _rules_for(self, parts: list[str]) -> Iterator[_Compiled]:
        # Rules under a fixed first level come first; a wildcard first level never
        # takes a topic under one of the platform's roots.
        yield from self._by_root.get(parts[0], ())
        if parts[0] not in RESERVED_ROOTS and not parts[0].startswith("$"):
            yield from self._wild

    def match(self, topic: str) -> tuple[_Compiled, dict[str, str]] | None:
        parts = topic.split("/")
        for compiled in self._rules_for(parts):
            captures = _match(compiled.segments, parts)
            if captures is not None:
                return compiled, captures
        return None

    def translate(self, topic: str, payload: bytes, now: float | None = None) -> Translation:
        """Raises MappingError for a message a mapping matched but cannot take."""
        now = time.time() if now is None else now
        found = self.match(topic)
        if found is None:
            return Translation(ignored=True)
        compiled, captures = found
        mapping, rule = compiled.mapping, compiled.rule
        result = Translation(mapping=mapping.name, rule=rule.topic)
        if rule.ignore:
            result.ignored = True
            return result
        limit = MAX_REGISTRY_BYTES if rule.registry is not None else MAX_PAYLOAD_BYTES
        if len(payload) > limit:
            raise MappingError("oversize", f"{len(payload)} bytes > {limit}")
        body = _load(payload, rule.payload)
        if rule.registry is not None:
            self._registry(mapping, rule.registry, captures, body, result, now)
            return result
        if rule.status is not None and rule.status.bridge:
            if _status(rule.status, body) == "offline":
                for device_id, binding in self.devices.items():
                    if binding.mapping == mapping.name:
                        result.device_ids.append(device_id)
                        result.messages.append((f"{TOPIC_ROOT}/{device_id}/status", b"offline"))
            return result
        device_id = self._device_id(mapping, captures)
        binding = self._binding(mapping, device_id, captures)
        result.device_ids.append(device_id)
        out: list[Native] = []
        if rule.info is not None and isinstance(body, dict):
            binding.details.update(_info_values(rule.info, body))
        if rule.relays is not None:
            relays = _relays(rule.relays, body, captures)
            for name in relays:
                binding.capabilities.add(f"relay:{name}")
            if relays:
                binding.relays.update(relays)
                out.append(_native(device_id, "state", {"relays": dict(binding.relays)}))
        if rule.data is not None and isinstance(body, dict):
            data = _data(rule.data, body, captures, binding.units)
            if data:
                out.append(_native(device_id, "data", data))
        if rule.status is not None:
            out.append((f"{TOPIC_ROOT}/{device_id}/status", _status(rule.status, body).encode()))
        if rule.ack is not None:
            acks = _acks(rule.ack, body, binding, now)
            out.extend(_native(device_id, "ack", a) for a in acks)
            if rule.ack.by == "key" and isinstance(body, dict):
                values = {
                    k: v
                    for k, v in body.items()
                    if isinstance(v, str | int | float | bool) and _expectable(mapping, k)
                }
                if values:
                    result.reports.append(
                        KeyReport(
                            device_id,
                            values,
                            _relays(rule.relays, body, captures) if rule.relays else {},
                            {a["id"] for a in acks},
                        )
                    )
        info = self._info(mapping, device_id, binding)
        result.messages = ([info] if info is not None else []) + out
        return result

    def _device_id(self, mapping: Mapping, captures: dict[str, str]) -> str:
        values = {k: sanitize_id(v) for k, v in captures.items()}
        device_id = render(mapping.device_id, values)
        if DEVICE_ID_RE.fullmatch(device_id) is None:
            raise MappingError("bad_device_id", device_id[:80])
        return device_id

    def _binding(self, mapping: Mapping, device_id: str, captures: dict[str, str]) -> Binding:
        binding = self.devices.get(device_id)
        if binding is not None:
            if binding.mapping != mapping.name:
                raise MappingError(
                    "adapter_id_taken", f"{device_id} belongs to the {binding.mapping} mapping"
                )
            binding.values.update(captures)
            return binding
        if self.claimed is not None and self.claimed(device_id):
            raise MappingError("adapter_id_taken", f"{device_id} is a device of the platform's own")
        binding = Binding(mapping.name, dict(captures), fresh=True)
        self.devices[device_id] = binding
        return binding

    def _info(self, mapping: Mapping, device_id: str, binding: Binding) -> Native | None:
        """The device's info: sent first, and again whenever what it says has changed
        (a relay or a unit seen for the first time): registration and capabilities."""
        # Most messages teach nothing new: compare what the info is made of first.
        key = (
            mapping,
            len(binding.capabilities),
            tuple(binding.units),
            tuple(binding.details.items()),
            tuple(binding.values.items()),
        )
        if key == binding.info_key:
            return None
        binding.info_key = key
        caps = set(mapping.capabilities) | binding.capabilities
        caps.update(name for name in mapping.commands if name != "relay")
        info: dict[str, Any] = {
            "type": mapping.type or mapping.name,
            "capabilities": sorted(caps)[:MAX_FIELDS],
            "interval": mapping.interval,
            "adapter": {"mapping": mapping.name, "vars": dict(sorted(binding.values.items()))},
        }
        if mapping.device_name:
            info["name"] = render(mapping.device_name, binding.values)[:128]
        if binding.units:
            info["units"] = dict(sorted(binding.units.items())[:MAX_FIELDS])
        info.update(binding.details)
        encoded = orjson.dumps(info)
        if encoded == binding.info_sent:
            return None
        binding.info_sent = encoded
        return (f"{TOPIC_ROOT}/{device_id}/info", encoded)

    def _registry(
        self,
        mapping: Mapping,
        spec: RegistrySpec,
        captures: dict[str, str],
        body: Any,
        result: Translation,
        now: float,
    ) -> None:
        if not isinstance(body, list):
            raise MappingError("bad_type", "a device list must be a JSON array")
        for entry in body:
            if not isinstance(entry, dict):
                continue
            if spec.skip and all(lookup(entry, k) == v for k, v in spec.skip.items()):
                continue
            name = lookup(entry, spec.name)
            if not isinstance(name, str) or not name:
                continue
            values = {**captures, spec.capture: name}
            try:
                device_id = self._device_id(mapping, values)
                binding = self._binding(mapping, device_id, values)
            except MappingError:
                continue  # one bad entry does not hide the others
            binding.details.update(_info_values(spec.info, entry))
            info = self._info(mapping, device_id, binding)
            result.device_ids.append(device_id)
            if info is not None:
                result.messages.append(info)

    # ---- platform commands out ---------------------------------------------------------

    def command(
        self, device_id: str, payload: bytes, now: float | None = None
    ) -> tuple[list[Native], list[Native]]:
        """A platform command (``devices/{id}/commands``) for a mapped device: returns
        (the firmware's messages to publish, acks to ingest at once). A command the
        mapping cannot send is answered with an error ack naming why."""
        now = time.time() if now is None else now
        binding = self.devices.get(device_id)
        if binding is None:
            return [], []
        try:
            cmd = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return [], []
        if not isinstance(cmd, dict) or not isinstance(cmd.get("id"), str):
            return [], []
        command_id: str = cmd["id"]
        name = cmd.get("command")
        raw = cmd.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        mapping = self._mappings.get(binding.mapping)

        def refuse(reason: str) -> tuple[list[Native], list[Native]]:
            ack = {"id": command_id, "status": "error", "error": reason}
            return [], [_native(device_id, "ack", ack)]

        if mapping is None:
            return refuse(f"the {binding.mapping} mapping is turned off")
        spec = mapping.commands.get(str(name))
        if spec is None:
            if name == "ota":
                return refuse(
                    mapping.ota or f"OTA does not apply to {mapping.title or mapping.name} firmware"
                )
            have = sorted(mapping.commands) or "none"
            return refuse(f"the {mapping.name} mapping has no command {name!r} (it has: {have})")
        values = _command_values(binding.values, spec, command_id, device_id, str(name), params)
        if isinstance(values, str):
            return refuse(values)
        try:
            topic = render(spec.topic, values)
            template = (
                spec.payload_toggle
                if values.get("state") == "toggle" and spec.payload_toggle is not None
                else spec.payload
            )
            body = render_payload(template, values)
        except MappingError as exc:
            return refuse(f"the {mapping.name} mapping cannot build this command: {exc}")
        root = topic.split("/", 1)[0]
        if root in RESERVED_ROOTS or root.startswith("$") or "+" in topic or "#" in topic:
            return refuse(f"the {mapping.name} mapping would publish on {topic!r}: refused")
        out = body.encode() if isinstance(body, str) else orjson.dumps(body)
        acks: list[Native] = []
        if spec.expect is not None:
            expect = render(spec.expect, values)
            while binding.pending and (
                len(binding.pending) >= MAX_PENDING_PER_DEVICE
                or binding.pending[0][2] < now - PENDING_SECONDS
            ):
                binding.pending.popleft()
            binding.pending.append((command_id, expect, now))
        elif not _acks_by_id(mapping):
            # The firmware reports no result for it: acknowledged once published.
            acks.append(
                _native(
                    device_id,
                    "ack",
                    {"id": command_id, "status": "ok", "result": {"published": topic}},
                )
            )
        return [(topic, out)], acks

    def settle(
        self, device_id: str, command_id: str, name: str, params: dict[str, Any], report: KeyReport
    ) -> Native | None:
        """The ack a device's open command gets from a key report, if the report answers
        it: the key the command expects, and for a relay turned on or off, that state.
        (The engine that published a command checks the key alone; an open command
        found in the database is held to the state too, as reports of unchanged relays
        come and go without any command.)"""
        binding = self.devices.get(device_id)
        mapping = self._mappings.get(binding.mapping) if binding is not None else None
        if binding is None or mapping is None or command_id in report.settled:
            return None
        spec = mapping.commands.get(name)
        if spec is None or spec.expect is None:
            return None
        values = _command_values(binding.values, spec, command_id, device_id, name, params)
        if isinstance(values, str):
            return None
        try:
            expect = render(spec.expect, values)
        except MappingError:
            return None
        if expect not in report.values:
            return None
        state = values.get("state")
        relay_state = report.relays.get(expect) if name == "relay" else None
        if state in ("on", "off") and relay_state is not None and relay_state != (state == "on"):
            return None
        ack = {"id": command_id, "status": "ok", "result": {expect: report.values[expect]}}
        return _native(device_id, "ack", ack)


def _command_values(
    captured: dict[str, str],
    spec: CommandOut,
    command_id: str,
    device_id: str,
    name: str,
    params: dict[str, Any],
) -> dict[str, Any] | str:
    """The variables a command's templates are rendered with, or why it cannot be sent."""
    values: dict[str, Any] = {**captured, "command_id": command_id, "device_id": device_id}
    for key, value in params.items():
        if isinstance(value, str | int | float | bool):
            values.setdefault(key, value)
    if name == "relay":
        relay = str(params.get("name", ""))
        state = str(params.get("state", "")).lower()
        if state not in ("on", "off", "toggle"):
            return f"relay state must be on, off or toggle, not {state!r}"
        values.update(relay=relay, state=state, STATE=state.upper(), on=state == "on")
        if spec.relay_pattern is not None:
            match = re.fullmatch(spec.relay_pattern, relay)
            if match is None:
                return f"{relay!r} is not a relay of this device"
            values.update({k: (int(v) if v.isdigit() else v) for k, v in match.groupdict().items()})
    return values


def _expectable(mapping: Mapping, key: str) -> bool:
    """Whether some command of the mapping could be acknowledged by this key."""
    for spec in mapping.commands.values():
        if spec.expect is None:
            continue
        if "{" not in spec.expect:
            if key == spec.expect:
                return True
        elif spec.expect == "{relay}" and spec.relay_pattern is not None:
            if re.fullmatch(spec.relay_pattern, key) is not None:
                return True
        else:
            return True
    return False


def _covers(wide: str, narrow: str) -> bool:
    """Every topic the ``narrow`` filter matches, the ``wide`` one matches too."""
    w, n = wide.split("/"), narrow.split("/")
    for i, level in enumerate(w):
        if level == "#":
            return True
        if i >= len(n) or n[i] == "#" or (level != "+" and level != n[i]):
            return False
    return len(w) == len(n)


def _minimal(filters: set[str]) -> list[str]:
    """Without the filters another one covers: Mosquitto delivers a message once per
    matching subscription, and the worker must see each message once."""
    return sorted(f for f in filters if not any(g != f and _covers(g, f) for g in filters))


def _acks_by_id(mapping: Mapping) -> bool:
    return any(rule.ack is not None and rule.ack.by == "id" for rule in mapping.rules)


def _native(device_id: str, kind: str, body: Any) -> Native:
    return (f"{TOPIC_ROOT}/{device_id}/{kind}", orjson.dumps(body))


def _load(payload: bytes, kind: str) -> Any:
    if kind == "text":
        return payload.decode("utf-8", "replace").strip()
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # Firmware sends plain text on some JSON topics (a bare ON, a number): kept as text.
        text = payload.decode("utf-8", "replace").strip()
        if text.startswith(("{", "[")):
            raise MappingError("bad_json", text[:80]) from None
        return text


def _info_values(spec: InfoSpec, body: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("firmware", "ip", "model"):
        path = getattr(spec, key)
        value = lookup(body, path) if path else None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            values[key] = str(value)[:64]
    if spec.rssi:
        rssi = lookup(body, spec.rssi)
        if type(rssi) is int and -200 <= rssi <= 50:
            values["rssi"] = rssi
    return values


def _metric_name(name: str) -> str:
    return _BAD_NAME_CHARS.sub("_", name)[:64]


def _data(
    spec: DataSpec, body: dict[str, Any], captures: dict[str, str], units: dict[str, str]
) -> dict[str, Any]:
    prefix = render(spec.prefix, captures) if spec.prefix else ""
    metrics: dict[str, float] = {}
    attributes: dict[str, Any] = {}
    excluded = set(spec.exclude)

    def unit_for(name: str, path: str) -> str | None:
        return (
            spec.units.get(name) or spec.units.get(path) or spec.units.get(path.rsplit(".", 1)[-1])
        )

    def walk(obj: dict[str, Any], path: str) -> None:
        for key, value in obj.items():
            here = f"{path}.{key}" if path else str(key)
            if here in excluded or key in excluded:
                continue
            if isinstance(value, dict):
                walk(value, here)
            elif _is_number(value):
                name = _metric_name(prefix + here)
                metrics[name] = float(value)
                unit = unit_for(name, here)
                if unit:
                    units[name] = unit

    if spec.flatten:
        walk(body, "")
    for name, source in spec.fields.items():
        path = source if isinstance(source, str) else source.path
        value = lookup(body, path)
        if not _is_number(value):
            continue
        scale = 1.0 if isinstance(source, str) else source.scale
        full = _metric_name(prefix + name)
        metrics[full] = float(value) * scale
        unit = (None if isinstance(source, str) else source.unit) or unit_for(name, path)
        if unit:
            units[full] = unit
    if spec.attributes:
        for key, value in body.items():
            if key in excluded or isinstance(value, dict | list) or _is_number(value):
                continue
            if isinstance(value, float):  # not finite: the protocol has no place for it
                continue
            name = _metric_name(prefix + str(key))
            if NAME_RE.fullmatch(name) is not None and name not in metrics:
                attributes[name] = value if not isinstance(value, str) else value[:256]
    out: dict[str, Any] = dict(list(metrics.items())[:MAX_FIELDS])
    for key, value in attributes.items():
        if len(out) >= MAX_FIELDS:
            break
        out[key] = value
    return out


def _status(spec: StatusSpec, body: Any) -> str:
    value = lookup(body, spec.path) if spec.path and isinstance(body, dict) else body
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value).strip() if value is not None else ""
    if text in spec.online or text.lower() in (v.lower() for v in spec.online):
        return "online"
    if text in spec.offline or text.lower() in (v.lower() for v in spec.offline):
        return "offline"
    raise MappingError("bad_status", text[:40])


def _relays(spec: RelaySpec, body: Any, captures: dict[str, str]) -> dict[str, bool]:
    found: dict[str, bool] = {}

    def state(value: Any) -> bool | None:
        # Strings and booleans only: 1 == True in Python, and a number is no relay state.
        if not isinstance(value, str | bool):
            return None
        if value in spec.on:
            return True
        if value in spec.off:
            return False
        return None

    if not isinstance(body, dict):
        return found
    if spec.path is not None:
        value = state(lookup(body, spec.path))
        if value is not None:
            found[_metric_name(render(spec.name, {**captures, "key": spec.path}))] = value
        return found
    pattern = re.compile(spec.keys or "")
    for key, raw in body.items():
        if pattern.fullmatch(str(key)) is None:
            continue
        value = state(raw)
        if value is not None:
            found[_metric_name(render(spec.name, {**captures, "key": key}))] = value
    return found


def _acks(spec: AckSpec, body: Any, binding: Binding, now: float) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    if spec.by == "id":
        command_id = lookup(body, spec.id)
        if not isinstance(command_id, str) or not command_id:
            return []
        error = lookup(body, spec.error)
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            return [{"id": command_id, "status": "error", "error": str(message)[:1024]}]
        result = lookup(body, spec.result)
        return [{"id": command_id, "status": "ok", "result": result}]
    acks: list[dict[str, Any]] = []
    if spec.error_key is not None and binding.pending:
        value = body.get(spec.error_key)
        if isinstance(value, str) and value in spec.error_values:
            command_id, expect, _ = binding.pending.popleft()
            acks.append(
                {
                    "id": command_id,
                    "status": "error",
                    "error": f"the firmware answered {spec.error_key}: {value} ({expect})",
                }
            )
    kept: deque[tuple[str, str, float]] = deque()
    for command_id, expect, at in binding.pending:
        if expect in body:
            acks.append({"id": command_id, "status": "ok", "result": {expect: body[expect]}})
        elif at >= now - PENDING_SECONDS:
            kept.append((command_id, expect, at))
    binding.pending = kept
    return acks
