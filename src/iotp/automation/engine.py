"""Rule evaluation: pure logic, no I/O, no clock of its own (every call gets ``ts`` or
``now``), so it is unit-tested directly and the dry run replays history through it.

The worker feeds it telemetry (``on_data``, on the ingest hot path), platform events
(``on_event``) and a periodic ``tick``; it appends ``Firing``s to ``out`` for the
runtime to act on. Cost on the hot path: for each metric some threshold rule watches,
one dict lookup and two bisections over that metric's sorted thresholds. Only when a
sample moves into another band between thresholds are the rules on that metric looked
at, so a steady stream costs the same with 1 rule or 100.

Semantics:

- threshold: fires on the *crossing* (inactive -> active), never on every sample past
  it; with ``hysteresis`` it re-arms only after the value comes back past
  ``value -/+ hysteresis`` (that is the rule's *clear*); with ``for_seconds`` the value
  must stay past ``value`` that long (a timer, checked by ``tick``). A device starts
  inactive, so a first sample already past the threshold fires.
- rate: fires when the change per minute between consecutive samples crosses ``value``.
- offline (for N s) / online (back from offline) / registered / command_failed /
  alert_raised: from platform events. offline clears when the device is back.
- schedule: checked in ``tick`` for every minute that passed (see schedule.py).
- conditions are checked when the trigger fires; a blocked firing is not retried.
- cooldown: per rule and device, the minimum time between two firings.
- clear: emitted only for an activation that did fire (so ``when: clear`` actions undo
  only what ``when: fire`` actions did).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotp.automation.schedule import (
    due_minutes,
    in_window,
    local_time,
    schedule_matches,
)
from iotp.automation.spec import (
    SEVERITIES,
    DeviceCondition,
    MetricCondition,
    RateTrigger,
    Rule,
    ThresholdTrigger,
    TimeCondition,
)
from iotp.protocol.units import units_for

FIRE = "fire"
CLEAR = "clear"
FAILED_COMMAND_STATES = frozenset({"failed", "timed_out"})


@dataclass(slots=True)
class DeviceMeta:
    name: str = ""
    type: str | None = None
    tags: frozenset[str] = frozenset()
    # metric -> unit as the device declares it; a firing's context carries the unit so
    # alert texts, webhooks and the dry run read "31.5 °C", not a bare number.
    units: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Firing:
    rule_id: int
    kind: str  # FIRE | CLEAR
    device_id: str | None
    ts: float
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Threshold:
    rule: Rule
    above: bool
    value: float
    exit_value: float
    for_seconds: float


Key = tuple[int, str]


def _compare(left: float, op: str, right: float) -> bool:
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == "==":
        return left == right
    return left != right


class Engine:
    def __init__(self) -> None:
        self.rules: dict[int, Rule] = {}
        self.devices: dict[str, DeviceMeta] = {}
        self.out: list[Firing] = []
        self.counters: Counter[str] = Counter()
        self._thresholds: dict[str, list[_Threshold]] = {}
        self._bounds: dict[str, list[float]] = {}
        self._bands: dict[str, dict[str, int]] = {}
        # Per metric: every threshold's bounds (value, exit value) sorted, with the index
        # of its threshold, and each device's value at its last band change: a band change
        # visits only the thresholds whose bounds lie between the old and the new value.
        self._bound_keys: dict[str, tuple[list[float], list[int]]] = {}
        self._band_values: dict[str, dict[str, float]] = {}
        self._rates: dict[str, list[Rule]] = {}
        self._prev: dict[str, dict[str, tuple[float, float]]] = {}
        self._metric_names: tuple[str, ...] = ()
        self._by_trigger: dict[str, list[Rule]] = {}
        self._schedules: list[Rule] = []
        self._schedule_minute: dict[int, int] = {}
        self._active: set[Key] = set()
        self._fired: set[Key] = set()
        self._pending: dict[Key, tuple[float, dict[str, Any]]] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._last_fired: dict[tuple[int, str | None], float] = {}
        self._watch_any: tuple[str, ...] = ()
        self._watch: dict[str, tuple[str, ...]] = {}
        self._latest: dict[str, dict[str, tuple[float, float]]] = {}
        # Scope device lists as sets: applies() runs for every rule on a band change.
        self._scope_devices: dict[int, frozenset[str]] = {}

    # ---- configuration ----------------------------------------------------------------

    def load(self, rules: Iterable[Rule]) -> None:
        """Replace the rule set. State of rules whose trigger and scope are unchanged is
        kept (an edit of the actions does not re-fire an active threshold)."""
        old = self.rules
        self.rules = {r.id: r for r in rules if r.enabled}
        stale = {
            rid
            for rid, rule in old.items()
            if rid not in self.rules
            or self.rules[rid].trigger != rule.trigger
            or self.rules[rid].scope != rule.scope
        }
        if stale:
            self._active = {k for k in self._active if k[0] not in stale}
            self._fired = {k for k in self._fired if k[0] not in stale}
            self._pending = {k: v for k, v in self._pending.items() if k[0] not in stale}
            for rid in stale:
                self._schedule_minute.pop(rid, None)
        self._compile()

    def _compile(self) -> None:
        thresholds: dict[str, list[_Threshold]] = {}
        rates: dict[str, list[Rule]] = {}
        by_trigger: dict[str, list[Rule]] = {}
        watch_any: set[str] = set()
        watch: dict[str, set[str]] = {}
        for rule in sorted(self.rules.values(), key=lambda r: r.id):
            t = rule.trigger
            if isinstance(t, ThresholdTrigger):
                above = t.op == "above"
                exit_value = t.value - t.hysteresis if above else t.value + t.hysteresis
                thresholds.setdefault(t.metric, []).append(
                    _Threshold(rule, above, t.value, exit_value, t.for_seconds)
                )
            elif isinstance(t, RateTrigger):
                rates.setdefault(t.metric, []).append(rule)
            else:
                by_trigger.setdefault(t.type, []).append(rule)
            for c in rule.conditions:
                if isinstance(c, MetricCondition):
                    if c.device_id is None:
                        watch_any.add(c.metric)
                    else:
                        watch.setdefault(c.device_id, set()).add(c.metric)
        self._thresholds = thresholds
        self._bounds = {
            metric: sorted({b for t in ts for b in (t.value, t.exit_value)})
            for metric, ts in thresholds.items()
        }
        self._bands = {metric: {} for metric in thresholds}
        self._bound_keys = {}
        for metric, ts in thresholds.items():
            pairs = sorted((b, i) for i, t in enumerate(ts) for b in {t.value, t.exit_value})
            self._bound_keys[metric] = ([b for b, _ in pairs], [i for _, i in pairs])
        self._band_values = {metric: {} for metric in thresholds}
        self._rates = rates
        for metric in rates:
            self._prev.setdefault(metric, {})
        self._metric_names = tuple(sorted(set(thresholds) | set(rates)))
        self._by_trigger = by_trigger
        self._schedules = by_trigger.get("schedule", [])
        self._watch_any = tuple(sorted(watch_any))
        self._watch = {d: tuple(sorted(m)) for d, m in watch.items()}
        self._scope_devices = {
            r.id: frozenset(r.scope.devices) for r in self.rules.values() if r.scope.devices
        }

    def set_device(
        self,
        device_id: str,
        *,
        name: str = "",
        type_: str | None = None,
        tags: Iterable[str] = (),
        units: Mapping[str, str] | None = None,
    ) -> None:
        """``units`` as the device declared them (defaults filled in); None keeps the
        units known so far (an info message without ``units`` changes none)."""
        known = self.devices.get(device_id)
        effective = units_for(units) if units is not None or known is None else known.units
        self.devices[device_id] = DeviceMeta(name, type_, frozenset(tags), effective)

    def forget_device(self, device_id: str) -> None:
        self.devices.pop(device_id, None)
        for bands in self._bands.values():
            bands.pop(device_id, None)
        for values in self._band_values.values():
            values.pop(device_id, None)
        for prev in self._prev.values():
            prev.pop(device_id, None)
        self._latest.pop(device_id, None)

    def assume_active(self, rule_id: int, device_id: str) -> None:
        """Restore an activation that fired before a restart (from its open alert), so
        its clear still comes."""
        self._active.add((rule_id, device_id))
        self._fired.add((rule_id, device_id))

    def applies(self, rule: Rule, device_id: str) -> bool:
        scope = rule.scope
        if scope.devices:
            devices = self._scope_devices.get(rule.id)
            if devices is None or self.rules.get(rule.id) is not rule:
                devices = frozenset(scope.devices)  # a rule not loaded here
            if device_id not in devices:
                return False
        if scope.tags or scope.device_type:
            meta = self.devices.get(device_id)
            if meta is None:
                return False
            if scope.device_type and meta.type != scope.device_type:
                return False
            if scope.tags and not meta.tags.issuperset(scope.tags):
                return False
        return True

    def scope_devices(self, rule: Rule) -> list[str]:
        """Known devices in a rule's scope (targets of device-less firings)."""
        if rule.scope.is_empty:
            return []
        if rule.scope.devices and not (rule.scope.tags or rule.scope.device_type):
            return list(rule.scope.devices)
        return sorted(d for d in self.devices if self.applies(rule, d))

    # ---- inputs -----------------------------------------------------------------------

    def on_data(self, device_id: str, metrics: Mapping[str, float], ts: float) -> None:
        """The hot path: keep it allocation-free when nothing crosses."""
        if self._watch_any or self._watch:
            self._remember(device_id, metrics, ts)
        for name in self._metric_names:
            value = metrics.get(name)
            if value is None:
                continue
            bounds = self._bounds.get(name)
            if bounds is not None:
                # A band between two thresholds, or exactly on one (left != right).
                band = bisect_left(bounds, value) + bisect_right(bounds, value)
                bands = self._bands[name]
                if bands.get(device_id) != band:
                    bands[device_id] = band
                    values = self._band_values[name]
                    self._thresholds_moved(name, device_id, value, ts, values.get(device_id))
                    values[device_id] = value
            rates = self._rates.get(name)
            if rates is not None:
                self._rate_sample(rates, name, device_id, value, ts)

    def on_event(
        self, event_type: str, device_id: str, payload: Mapping[str, Any], ts: float
    ) -> None:
        if event_type == "device_status":
            self._status(device_id, payload.get("status"), payload.get("previous"), ts)
        elif event_type == "device_registered":
            for rule in self._by_trigger.get("registered", ()):
                if self.applies(rule, device_id):
                    self._fire(rule, device_id, ts, {"event": "registered"})
        elif event_type == "command_update":
            if payload.get("status") in FAILED_COMMAND_STATES:
                self._command_failed(device_id, payload, ts)
        elif event_type == "alert" and payload.get("action") == "raised":
            self._alert_raised(device_id, payload, ts)

    def tick(self, now: float) -> None:
        """Timers (durations, offline for N s) and schedules."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, rule_id, device_id = heapq.heappop(timers)
            key = (rule_id, device_id)
            pending = self._pending.get(key)
            if pending is None or pending[0] != deadline:
                continue  # cancelled or superseded
            del self._pending[key]
            rule = self.rules.get(rule_id)
            if rule is None:
                continue
            self._active.add(key)
            self._fire(rule, device_id, deadline, pending[1], key)
        for rule in self._schedules:
            self._schedule(rule, now)

    # ---- triggers ---------------------------------------------------------------------

    def _crossed(self, metric: str, previous: float | None, value: float) -> list[_Threshold]:
        """Thresholds with a bound between the previous band's value and this one (all of
        them for a device's first sample): only their state can change."""
        thresholds = self._thresholds[metric]
        if previous is None:
            return thresholds
        bounds, index = self._bound_keys[metric]
        low, high = (previous, value) if previous <= value else (value, previous)
        picked = sorted(set(index[bisect_left(bounds, low) : bisect_right(bounds, high)]))
        return [thresholds[i] for i in picked]

    def _thresholds_moved(
        self, metric: str, device_id: str, value: float, ts: float, previous: float | None = None
    ) -> None:
        for t in self._crossed(metric, previous, value):
            rule = t.rule
            if not self.applies(rule, device_id):
                continue
            key = (rule.id, device_id)
            if t.above:
                enter, leave = value > t.value, value < t.exit_value
            else:
                enter, leave = value < t.value, value > t.exit_value
            if key in self._active:
                if leave:
                    self._end(rule, key, ts, {"metric": metric, "value": value})
            elif key in self._pending:
                if not enter:
                    del self._pending[key]  # did not hold for for_seconds
                    self.counters["duration_not_held"] += 1
            elif enter:
                context = {
                    "metric": metric,
                    "value": value,
                    "threshold": t.value,
                    "op": ">" if t.above else "<",
                }
                if t.for_seconds > 0:
                    self._start_timer(key, ts + t.for_seconds, context)
                else:
                    self._active.add(key)
                    self._fire(rule, device_id, ts, context, key)

    def _rate_sample(
        self, rules: list[Rule], metric: str, device_id: str, value: float, ts: float
    ) -> None:
        prev_by_device = self._prev[metric]
        prev = prev_by_device.get(device_id)
        prev_by_device[device_id] = (value, ts)
        if prev is None or ts <= prev[1]:
            return
        per_minute = (value - prev[0]) / (ts - prev[1]) * 60.0
        for rule in rules:
            t = rule.trigger
            assert isinstance(t, RateTrigger)
            if not self.applies(rule, device_id):
                continue
            key = (rule.id, device_id)
            on = per_minute > t.value if t.op == "rises" else per_minute < -t.value
            context = {"metric": metric, "value": value, "rate_per_minute": round(per_minute, 6)}
            if on and key not in self._active:
                self._active.add(key)
                self._fire(rule, device_id, ts, context, key)
            elif not on and key in self._active:
                self._end(rule, key, ts, context)

    def _status(self, device_id: str, status: Any, previous: Any, ts: float) -> None:
        for rule in self._by_trigger.get("offline", ()):
            if not self.applies(rule, device_id):
                continue
            key = (rule.id, device_id)
            if status == "offline":
                if key in self._active or key in self._pending:
                    continue
                delay = getattr(rule.trigger, "for_seconds", 0.0)
                context = {"status": "offline", "offline_since": ts}
                if delay > 0:
                    self._start_timer(key, ts + delay, context)
                else:
                    self._active.add(key)
                    self._fire(rule, device_id, ts, context, key)
            elif status == "online":
                self._pending.pop(key, None)
                if key in self._active:
                    self._end(rule, key, ts, {"status": "online"})
        if status == "online" and previous == "offline":
            for rule in self._by_trigger.get("online", ()):
                if self.applies(rule, device_id):
                    self._fire(rule, device_id, ts, {"status": "online"})

    def _command_failed(self, device_id: str, payload: Mapping[str, Any], ts: float) -> None:
        for rule in self._by_trigger.get("command_failed", ()):
            wanted = getattr(rule.trigger, "command", None)
            if wanted and payload.get("command") != wanted:
                continue
            if not self.applies(rule, device_id):
                continue
            if payload.get("source") == "rule" and payload.get("rule_id") == rule.id:
                continue
            context = {
                "command": payload.get("command"),
                "command_id": payload.get("id"),
                "status": payload.get("status"),
                "error": payload.get("error"),
            }
            self._fire(rule, device_id, ts, context)

    def _alert_raised(self, device_id: str, payload: Mapping[str, Any], ts: float) -> None:
        severity = payload.get("severity")
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        for rule in self._by_trigger.get("alert_raised", ()):
            t = rule.trigger
            if payload.get("rule_id") == rule.id:
                continue  # never on its own alerts
            if rank < SEVERITIES.index(getattr(t, "min_severity", "info")):
                continue
            wanted = getattr(t, "rule_id", None)
            if wanted is not None and payload.get("rule_id") != wanted:
                continue
            if device_id != "-" and not self.applies(rule, device_id):
                continue
            context = {
                "alert_id": payload.get("id"),
                "alert": payload.get("name"),
                "severity": severity,
                "message": payload.get("message"),
            }
            self._fire(rule, None if device_id == "-" else device_id, ts, context)

    def _schedule(self, rule: Rule, now: float) -> None:
        current = int(now // 60)
        last = self._schedule_minute.get(rule.id)
        self._schedule_minute[rule.id] = current
        if last is None or current <= last:
            return
        t = rule.trigger
        at, cron = getattr(t, "at", None), getattr(t, "cron", None)
        weekdays, tz = getattr(t, "weekdays", []), getattr(t, "timezone", "UTC")
        for minute in due_minutes(last, now):
            local = local_time(minute * 60.0, tz)
            if schedule_matches(local, at=at, cron=cron, weekdays=weekdays):
                context = {"local_time": local.strftime("%Y-%m-%d %H:%M %Z")}
                self._fire(rule, None, minute * 60.0, context)

    # ---- firing -----------------------------------------------------------------------

    def _start_timer(self, key: Key, deadline: float, context: dict[str, Any]) -> None:
        self._pending[key] = (deadline, context)
        heapq.heappush(self._timers, (deadline, key[0], key[1]))

    def _fire(
        self,
        rule: Rule,
        device_id: str | None,
        ts: float,
        context: dict[str, Any],
        key: Key | None = None,
    ) -> None:
        if rule.conditions and not self._conditions_hold(rule, device_id, ts):
            self.counters["blocked_by_condition"] += 1
            return
        cool = (rule.id, device_id)
        last = self._last_fired.get(cool)
        if last is not None and ts - last < rule.cooldown_seconds:
            self.counters["cooldown"] += 1
            return
        self._last_fired[cool] = ts
        if key is not None:
            self._fired.add(key)
        self.counters["fired"] += 1
        self.out.append(Firing(rule.id, FIRE, device_id, ts, self._with_unit(device_id, context)))

    def _end(self, rule: Rule, key: Key, ts: float, context: dict[str, Any]) -> None:
        self._active.discard(key)
        if key in self._fired:
            self._fired.discard(key)
            self.counters["cleared"] += 1
            self.out.append(Firing(rule.id, CLEAR, key[1], ts, self._with_unit(key[1], context)))

    def _with_unit(self, device_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        metric = context.get("metric")
        meta = self.devices.get(device_id) if device_id else None
        unit = meta.units.get(metric) if meta and isinstance(metric, str) else None
        return {**context, "unit": unit} if unit else context

    # ---- conditions -------------------------------------------------------------------

    def _remember(self, device_id: str, metrics: Mapping[str, float], ts: float) -> None:
        latest: dict[str, tuple[float, float]] | None = None
        for names in (self._watch_any, self._watch.get(device_id, ())):
            for name in names:
                value = metrics.get(name)
                if value is not None:
                    if latest is None:
                        latest = self._latest.setdefault(device_id, {})
                    latest[name] = (value, ts)

    def latest(self, device_id: str, metric: str) -> tuple[float, float] | None:
        return self._latest.get(device_id, {}).get(metric)

    def _conditions_hold(self, rule: Rule, device_id: str | None, ts: float) -> bool:
        for c in rule.conditions:
            if isinstance(c, MetricCondition):
                target = c.device_id or device_id
                seen = self.latest(target, c.metric) if target else None
                if seen is None or ts - seen[1] > c.max_age_seconds:
                    return False
                if not _compare(seen[0], c.op, c.value):
                    return False
            elif isinstance(c, TimeCondition):
                if not in_window(
                    ts, after=c.after, before=c.before, weekdays=c.weekdays, tz=c.timezone
                ):
                    return False
            elif isinstance(c, DeviceCondition):
                meta = self.devices.get(device_id) if device_id else None
                if meta is None:
                    return False
                if c.device_type and meta.type != c.device_type:
                    return False
                if c.tags and not meta.tags.issuperset(c.tags):
                    return False
        return True

    def take(self) -> list[Firing]:
        out, self.out = self.out, []
        return out


# ---- dry run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    ts: float
    device_id: str
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    type: str
    device_id: str
    payload: Mapping[str, Any]


def replay(
    rule: Rule,
    *,
    samples: Sequence[Sample],
    events: Sequence[Event] = (),
    devices: Mapping[str, DeviceMeta] | None = None,
    start: float,
    end: float,
    tick_seconds: float = 60.0,
) -> list[Firing]:
    """When would ``rule`` have fired over [start, end]? Feeds recorded telemetry and
    events in time order through a fresh engine, ticking timers and schedules."""
    engine = Engine()
    engine.devices = dict(devices or {})
    engine.load([rule.model_copy(update={"enabled": True})])
    stream: list[tuple[float, int, Sample | Event]] = [(s.ts, 0, s) for s in samples]
    stream += [(e.ts, 1, e) for e in events]
    stream.sort(key=lambda item: (item[0], item[1]))
    engine.tick(start)
    next_tick = start + tick_seconds
    for ts, _, item in stream:
        if ts < start or ts > end:
            continue
        while next_tick <= ts:
            engine.tick(next_tick)
            next_tick += tick_seconds
        engine.tick(ts)
        if isinstance(item, Sample):
            engine.on_data(item.device_id, item.metrics, item.ts)
        else:
            engine.on_event(item.type, item.device_id, item.payload, item.ts)
    while next_tick <= end:
        engine.tick(next_tick)
        next_tick += tick_seconds
    engine.tick(end)
    return engine.take()
