"""Automation rules on a real database: a dry run replays the stored history of the
devices in the rule's scope (and refuses a range it cannot cover, with the reason); the
worker loads the enabled rules that still validate; the counters of firings add up; every
template is a rule that can be stored."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from iotp.automation.spec import Rule, RuleBody
from iotp.db.automation_models import RuleRow
from iotp.db.models import Device
from iotp.errors import InvalidRequestError
from iotp.services import rules, telemetry

# Recent: the history a dry run reads is what ingest stores now.
T0 = float(int(time.time()) - 3600)
KITCHEN, HALL = "ESP32-KITCHEN", "ESP32-HALL"


def _gas_rule(rule_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": "Gas",
        "scope": {"tags": ["gas"]},
        "trigger": {
            "type": "threshold",
            "metric": "gas",
            "op": "above",
            "value": 400,
            "hysteresis": 100,
        },
        "actions": [{"type": "alert", "severity": "critical"}],
        "cooldown_seconds": 0,
        **extra,
    }


async def _devices(session: AsyncSession) -> None:
    for device_id, tags in ((KITCHEN, ["gas"]), (HALL, [])):
        session.add(Device(id=device_id, name=device_id, tags=tags, status="online", first_seen=T0))
    await session.commit()


async def _history(session: AsyncSession, readings: list[tuple[str, float, float]]) -> None:
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    rows = [
        telemetry.make_row(device_id, T0 + offset, seq, {"gas": gas}, None)
        for seq, (device_id, offset, gas) in enumerate(readings)
    ]
    assert await telemetry.insert_rows(engine, rows) == len(rows)


async def test_a_dry_run_replays_the_history_of_the_devices_in_scope(
    session: AsyncSession,
) -> None:
    await _devices(session)
    await _history(
        session,
        [
            (KITCHEN, 1, 100),
            (KITCHEN, 2, 500),  # above 400: fires
            (HALL, 2.5, 900),  # not in the rule's scope
            (KITCHEN, 3, 350),  # inside the hysteresis band: still firing
            (KITCHEN, 4, 250),  # below 300: clears
            (KITCHEN, 5, 600),  # fires again
        ],
    )
    rule = Rule.model_validate(_gas_rule())
    firings, samples, truncated = await rules.dry_run(session, rule=rule, since=T0, until=T0 + 60)
    assert [(f.kind, f.device_id, f.ts) for f in firings] == [
        ("fire", KITCHEN, T0 + 2),
        ("clear", KITCHEN, T0 + 4),
        ("fire", KITCHEN, T0 + 5),
    ]
    assert (samples, truncated) == (5, False)  # the hall's reading was never read

    # A range that starts later replays only what it covers.
    later, samples, _ = await rules.dry_run(session, rule=rule, since=T0 + 4.5, until=T0 + 60)
    assert [(f.kind, f.ts) for f in later] == [("fire", T0 + 5)]
    assert samples == 1

    # Without a scope, every device's history counts.
    everywhere = Rule.model_validate(_gas_rule(scope={}))
    firings, samples, _ = await rules.dry_run(session, rule=everywhere, since=T0, until=T0 + 60)
    assert ("fire", HALL, T0 + 2.5) in [(f.kind, f.device_id, f.ts) for f in firings]
    assert samples == 6


@pytest.mark.parametrize(
    ("since", "until", "reason"),
    [
        (T0, T0, "until must be after since"),
        (T0, T0 - 1, "until must be after since"),
        (T0 - 8 * 86400, T0, "a dry run covers at most 7 days"),
    ],
)
async def test_a_dry_run_refuses_a_range_it_cannot_cover(
    session: AsyncSession, since: float, until: float, reason: str
) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        await rules.dry_run(
            session, rule=Rule.model_validate(_gas_rule()), since=since, until=until
        )


async def test_the_worker_loads_the_enabled_rules_that_still_validate(
    session: AsyncSession,
) -> None:
    body = RuleBody.model_validate({k: v for k, v in _gas_rule().items() if k != "id"})
    kept = await rules.create(session, body=body.model_copy(update={"name": "kept"}))
    off = await rules.create(session, body=body.model_copy(update={"name": "off"}))
    broken = await rules.create(session, body=body.model_copy(update={"name": "broken"}))
    await rules.set_enabled(session, rule_id=off.id, enabled=False)
    # A rule stored by an older version that no longer validates.
    await session.execute(
        update(RuleRow).where(RuleRow.id == broken.id).values(spec={"trigger": {"type": "x"}})
    )
    await session.commit()
    loaded = await rules.load_enabled(session)
    assert [(r.id, r.name) for r in loaded] == [(kept.id, "kept")]
    assert loaded[0].trigger == body.trigger
    listed, total = await rules.list_rules(session, enabled=True)
    assert total == 2
    assert {r.id for r in listed} == {kept.id, broken.id}


async def test_the_counters_of_firings_add_up(session: AsyncSession) -> None:
    body = RuleBody.model_validate({k: v for k, v in _gas_rule().items() if k != "id"})
    one = await rules.create(session, body=body)
    two = await rules.create(session, body=body)
    await session.commit()
    assert await rules.note_fired(session, {one.id: (2, T0 + 1)}) == {one.id: (2, T0 + 1)}
    await session.commit()
    count, _ = await rules.version(session)
    await rules.delete(session, rule_id=two.id)
    await session.commit()
    assert (await rules.version(session))[0] == count - 1  # the worker reloads
    # A rule deleted meanwhile is left out of the totals.
    totals = await rules.note_fired(session, {one.id: (3, T0 + 9), two.id: (1, T0 + 9)})
    await session.commit()
    assert totals == {one.id: (5, T0 + 9)}


async def test_every_template_is_a_rule_that_can_be_stored(session: AsyncSession) -> None:
    stored = 0
    for template in rules.TEMPLATES.values():
        for spec in template["rules"]:
            body = RuleBody.model_validate(spec)
            row = await rules.create(session, body=body)
            await session.commit()
            again = rules.to_rule(await rules.get(session, row.id))
            assert again.model_dump(exclude={"id"}) == body.model_dump()
            stored += 1
    assert stored == sum(len(t["rules"]) for t in rules.TEMPLATES.values())
