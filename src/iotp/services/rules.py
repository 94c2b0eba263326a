"""Automation rules: storage, templates and the dry run (replaying recorded history
through the pure engine). Plain async functions; the API and the worker share them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.automation.engine import DeviceMeta, Engine, Event, Firing, Sample, replay
from iotp.automation.spec import MetricCondition, RateTrigger, Rule, RuleBody, ThresholdTrigger
from iotp.db.automation_models import RuleRow
from iotp.db.models import Device, DeviceEventRow, Telemetry
from iotp.errors import InvalidRequestError, NotFoundError
from iotp.protocol.units import units_for

MAX_RULES = 10_000
DRY_RUN_MAX_SECONDS = 7 * 86400.0
DRY_RUN_MAX_SAMPLES = 200_000

_HEADER = ("name", "description", "enabled")


def to_rule(row: RuleRow) -> Rule:
    return Rule.model_validate(
        {
            **row.spec,
            "id": row.id,
            "name": row.name,
            "description": row.description,
            "enabled": row.enabled,
        }
    )


def _spec(body: RuleBody) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude=set(_HEADER))


async def create(session: AsyncSession, *, body: RuleBody, now: float | None = None) -> RuleRow:
    count = await session.scalar(select(func.count()).select_from(RuleRow)) or 0
    if count >= MAX_RULES:
        raise InvalidRequestError(f"at most {MAX_RULES} rules")
    now = time.time() if now is None else now
    row = RuleRow(
        name=body.name,
        description=body.description,
        enabled=body.enabled,
        spec=_spec(body),
        created_at=now,
        updated_at=now,
        fire_count=0,
    )
    session.add(row)
    await session.flush()
    return row


async def get(session: AsyncSession, rule_id: int) -> RuleRow:
    row = await session.get(RuleRow, rule_id)
    if row is None:
        raise NotFoundError("rule", str(rule_id))
    return row


async def replace(session: AsyncSession, *, rule_id: int, body: RuleBody) -> RuleRow:
    row = await get(session, rule_id)
    row.name = body.name
    row.description = body.description
    row.enabled = body.enabled
    row.spec = _spec(body)
    row.updated_at = max(time.time(), row.updated_at + 1e-6)
    await session.flush()
    return row


async def set_enabled(session: AsyncSession, *, rule_id: int, enabled: bool) -> RuleRow:
    row = await get(session, rule_id)
    row.enabled = enabled
    row.updated_at = max(time.time(), row.updated_at + 1e-6)
    await session.flush()
    return row


async def delete(session: AsyncSession, *, rule_id: int) -> None:
    row = await get(session, rule_id)
    await session.delete(row)
    await session.flush()


async def list_rules(
    session: AsyncSession, *, enabled: bool | None = None, limit: int = 500, offset: int = 0
) -> tuple[list[RuleRow], int]:
    query = select(RuleRow)
    count = select(func.count()).select_from(RuleRow)
    if enabled is not None:
        query = query.where(RuleRow.enabled == enabled)
        count = count.where(RuleRow.enabled == enabled)
    rows = (await session.scalars(query.order_by(RuleRow.id).limit(limit).offset(offset))).all()
    return list(rows), int(await session.scalar(count) or 0)


async def load_enabled(session: AsyncSession) -> list[Rule]:
    """Enabled rules for the worker; a row that no longer validates is skipped (and
    reported by the caller) rather than stopping every other rule."""
    rows = (await session.scalars(select(RuleRow).where(RuleRow.enabled.is_(True)))).all()
    out: list[Rule] = []
    for row in rows:
        try:
            out.append(to_rule(row))
        except ValidationError:
            continue
    return out


async def version(session: AsyncSession) -> tuple[int, float]:
    """Changes to the rule set (count, newest update): the worker reloads when it moves.
    Deletes lower the count; any create or edit raises the newest update time."""
    row = (await session.execute(select(func.count(), func.max(RuleRow.updated_at)))).one()
    return int(row[0] or 0), float(row[1] or 0.0)


async def note_fired(
    session: AsyncSession, fired: dict[int, tuple[int, float]]
) -> dict[int, tuple[int, float]]:
    """Counters for the rule list: {rule_id: (times fired, last time)}. Returns the
    totals after the update, {rule_id: (fire_count, last_fired_at)}, for the live table
    (rules deleted meanwhile are left out)."""
    for rule_id, (count, last) in fired.items():
        await session.execute(
            update(RuleRow)
            .where(RuleRow.id == rule_id)
            .values(fire_count=RuleRow.fire_count + count, last_fired_at=last)
        )
    rows = await session.execute(
        select(RuleRow.id, RuleRow.fire_count, RuleRow.last_fired_at).where(RuleRow.id.in_(fired))
    )
    return {rule_id: (count, last or 0.0) for rule_id, count, last in rows}


# ---- templates: the firmware's own automations, across devices ---------------------------


def _relay(name: str, state: str, when: str = "fire") -> dict[str, Any]:
    action = {"type": "command", "command": "relay", "params": {"name": name, "state": state}}
    return {**action, "when": when}


def _above(metric: str, value: float, hysteresis: float) -> dict[str, Any]:
    return {
        "type": "threshold",
        "metric": metric,
        "op": "above",
        "value": value,
        "hysteresis": hysteresis,
    }


def _lights(at: str, state: str) -> dict[str, Any]:
    return {
        "name": f"Lights {state} at {at}",
        "scope": {"tags": ["lights"]},
        "trigger": {"type": "schedule", "at": at, "timezone": "UTC"},
        "actions": [_relay("light", state)],
        "cooldown_seconds": 0,
    }


def _fan(name: str, metric: str, on: float, off: float) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": _above(metric, on, on - off),
        "actions": [_relay("fan", "on"), _relay("fan", "off", "clear")],
        "cooldown_seconds": 60,
    }


TEMPLATES: dict[str, dict[str, Any]] = {
    "lights_schedule": {
        "title": "Lights on a schedule",
        "description": "Light relay on in the evening, off at night, on every device tagged "
        "'lights' (the firmware's light_on/light_off, for a whole group).",
        "rules": [_lights("18:00", "on"), _lights("23:00", "off")],
    },
    "fan_temperature": {
        "title": "Fan on temperature",
        "description": "Fan on above 28 °C, off again below 26 °C (fan_temp_on/off).",
        "rules": [_fan("Fan on temperature", "temperature", 28, 26)],
    },
    "fan_humidity": {
        "title": "Fan on humidity",
        "description": "Fan on above 70 % humidity, off again below 65 % (fan_hum_on/off).",
        "rules": [_fan("Fan on humidity", "humidity", 70, 65)],
    },
    "gas_safety": {
        "title": "Gas safety",
        "description": "Gas above 400: critical alert, notification and the fan on (set the "
        "command's device to switch a fan elsewhere); the alert clears and the fan goes off "
        "when gas falls below 300.",
        "rules": [
            {
                "name": "Gas safety",
                "trigger": _above("gas", 400, 100),
                "actions": [
                    {"type": "alert", "severity": "critical", "message": "Gas {value} on {device}"},
                    _relay("fan", "on"),
                    _relay("fan", "off", "clear"),
                    {"type": "notify", "level": "critical", "message": "Gas alarm on {device}"},
                ],
                "cooldown_seconds": 30,
            }
        ],
    },
    "offline_alert": {
        "title": "Device offline",
        "description": "Alert when a device has been offline for 10 minutes; it clears when "
        "the device is back.",
        "rules": [
            {
                "name": "Device offline for 10 min",
                "trigger": {"type": "offline", "for_seconds": 600},
                "actions": [
                    {"type": "alert", "severity": "warning", "message": "{device} offline 10 min"}
                ],
                "cooldown_seconds": 0,
            }
        ],
    },
}


# ---- dry run ------------------------------------------------------------------------------


def _metrics_used(rule: Rule) -> set[str]:
    out: set[str] = set()
    if isinstance(rule.trigger, ThresholdTrigger | RateTrigger):
        out.add(rule.trigger.metric)
    for c in rule.conditions:
        if isinstance(c, MetricCondition):
            out.add(c.metric)
    return out


async def dry_run(
    session: AsyncSession, *, rule: Rule, since: float, until: float
) -> tuple[list[Firing], int, bool]:
    """Replay [since, until] through ``rule``: (firings, samples read, truncated)."""
    if until <= since:
        raise InvalidRequestError("until must be after since")
    if until - since > DRY_RUN_MAX_SECONDS:
        raise InvalidRequestError("a dry run covers at most 7 days")
    devices = {
        d.id: DeviceMeta(d.name, d.type, frozenset(d.tags or []), units_for(d.units))
        for d in (await session.scalars(select(Device))).all()
    }
    probe = _engine_with(rule, devices)
    in_scope = set(devices) if rule.scope.is_empty else set(probe.scope_devices(rule))
    wanted = in_scope | {
        c.device_id
        for c in rule.conditions
        if isinstance(c, MetricCondition) and c.device_id is not None
    }
    samples: list[Sample] = []
    truncated = False
    metrics = _metrics_used(rule)
    if metrics and wanted:
        query = (
            select(Telemetry.device_id, Telemetry.ts, Telemetry.metrics)
            .where(Telemetry.ts >= since, Telemetry.ts <= until)
            .order_by(Telemetry.ts)
            .limit(DRY_RUN_MAX_SAMPLES + 1)
        )
        if not rule.scope.is_empty or len(wanted) < len(devices):
            query = query.where(Telemetry.device_id.in_(sorted(wanted)))
        for device_id, ts, values in (await session.execute(query)).all():
            picked = {k: v for k, v in (values or {}).items() if k in metrics}
            if picked:
                samples.append(Sample(float(ts), device_id, picked))
        if len(samples) > DRY_RUN_MAX_SAMPLES:
            samples, truncated = samples[:DRY_RUN_MAX_SAMPLES], True
    events: list[Event] = []
    kinds = {"status": "device_status", "registered": "device_registered"}
    rows = await session.execute(
        select(
            DeviceEventRow.device_id, DeviceEventRow.ts, DeviceEventRow.type, DeviceEventRow.data
        )
        .where(
            DeviceEventRow.ts >= since,
            DeviceEventRow.ts <= until,
            DeviceEventRow.type.in_(list(kinds)),
        )
        .order_by(DeviceEventRow.ts)
        .limit(DRY_RUN_MAX_SAMPLES)
    )
    for device_id, ts, type_, data in rows.all():
        events.append(Event(float(ts), kinds[type_], device_id, data or {}))
    firings = replay(rule, samples=samples, events=events, devices=devices, start=since, end=until)
    return firings, len(samples), truncated


def _engine_with(rule: Rule, devices: dict[str, DeviceMeta]) -> Engine:
    engine = Engine()
    engine.devices = dict(devices)
    return engine


def firing_dicts(firings: Sequence[Firing]) -> list[dict[str, Any]]:
    return [
        {"ts": f.ts, "kind": f.kind, "device_id": f.device_id, "context": f.context}
        for f in firings
    ]
