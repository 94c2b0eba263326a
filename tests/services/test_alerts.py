"""Alerts on a real database: one open alert per key (raising it again counts a repeat),
the lifecycle active -> acknowledged -> cleared with every other change refused as a
conflict that says why, and the history of each transition."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.errors import ConflictError, NotFoundError
from iotp.services import alerts
from iotp.services.alerts import AlertConflict, AlertStatus

NOW = 1_800_000_000.0
KEY = alerts.rule_key(7, "ESP32-GAS")


async def _raise(session: AsyncSession, now: float = NOW) -> tuple[int, bool]:
    row, created = await alerts.raise_alert(
        session,
        key=KEY,
        name="Gas high",
        severity="critical",
        message="gas 812 > 600",
        rule_id=7,
        device_id="ESP32-GAS",
        data={"gas": 812},
        now=now,
    )
    await session.commit()
    return row.id, created


async def test_raising_an_open_alert_again_counts_a_repeat(session: AsyncSession) -> None:
    alert_id, created = await _raise(session)
    assert created
    again, created_again = await _raise(session, NOW + 5)
    assert (again, created_again) == (alert_id, False)
    row = await alerts.get(session, alert_id)
    assert row.data == {"gas": 812, "repeats": 1}
    assert row.raised_at == NOW
    rows, total = await alerts.list_alerts(session)
    assert total == 1
    assert [r.id for r in rows] == [alert_id]
    assert await alerts.counts(session) == {"active": 1}
    assert await alerts.active_by_severity(session) == {"critical": 1}
    assert await alerts.open_rule_alerts(session) == [(7, "ESP32-GAS")]


async def test_acknowledged_then_cleared_with_its_history(session: AsyncSession) -> None:
    alert_id, _ = await _raise(session)
    await alerts.acknowledge(session, alert_id=alert_id, by="ada", note="on my way", now=NOW + 60)
    await session.commit()
    # Still open: raising it again is a repeat, not a second alert.
    assert await _raise(session, NOW + 61) == (alert_id, False)
    assert await alerts.counts(session) == {"acknowledged": 1}

    row = await alerts.clear(session, alert_id=alert_id, by="ada", now=NOW + 120)
    await session.commit()
    assert row.status == AlertStatus.CLEARED
    view = alerts.to_dict(row)
    assert (view["acknowledged_by"], view["cleared_by"]) == ("ada", "ada")
    assert [(h["status"], h.get("by"), h.get("note")) for h in row.history] == [
        ("active", None, "raised"),
        ("acknowledged", "ada", "on my way"),
        ("cleared", "ada", None),
    ]
    assert [h["ts"] for h in row.history] == [NOW, NOW + 60, NOW + 120]
    assert await alerts.counts(session) == {}
    assert await alerts.open_rule_alerts(session) == []


async def test_a_cleared_alert_stays_history_and_the_key_raises_a_new_one(
    session: AsyncSession,
) -> None:
    alert_id, _ = await _raise(session)
    cleared = await alerts.clear_key(session, key=KEY, by="rule", now=NOW + 30, note="back")
    await session.commit()
    assert cleared is not None
    assert cleared.id == alert_id
    assert await alerts.clear_key(session, key=KEY, by="rule") is None  # nothing open

    new_id, created = await _raise(session, NOW + 90)
    assert created
    assert new_id != alert_id
    rows, total = await alerts.list_alerts(session, device_id="ESP32-GAS")
    assert total == 2
    assert [(r.id, r.status) for r in rows] == [(new_id, "active"), (alert_id, "cleared")]
    cleared_only, _ = await alerts.list_alerts(session, status=["cleared"])
    assert [r.id for r in cleared_only] == [alert_id]


@pytest.mark.parametrize(
    ("steps", "then", "reason"),
    [
        (["acknowledge"], "acknowledge", "acknowledged alert cannot become acknowledged"),
        (["clear"], "acknowledge", "cleared alert cannot become acknowledged"),
        (["clear"], "clear", "cleared alert cannot become cleared"),
        (["acknowledge", "clear"], "clear", "cleared alert cannot become cleared"),
    ],
)
async def test_a_change_the_state_forbids_is_a_conflict(
    session: AsyncSession, steps: list[str], then: str, reason: str
) -> None:
    alert_id, _ = await _raise(session)
    for step in steps:
        change = alerts.acknowledge if step == "acknowledge" else alerts.clear
        await change(session, alert_id=alert_id, by="ada", now=NOW + 10)
    await session.commit()
    before = (await alerts.get(session, alert_id)).history
    change = alerts.acknowledge if then == "acknowledge" else alerts.clear
    with pytest.raises(AlertConflict) as refused:
        await change(session, alert_id=alert_id, by="otto", now=NOW + 20)
    assert isinstance(refused.value, ConflictError)  # HTTP 409
    assert reason in str(refused.value)
    await session.rollback()
    row = await alerts.get(session, alert_id)
    assert row.history == before  # the refused change left no trace
    assert "otto" not in (row.acknowledged_by, row.cleared_by)


async def test_an_unknown_alert_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(NotFoundError):
        await alerts.acknowledge(session, alert_id=404, by="ada")
    with pytest.raises(NotFoundError):
        await alerts.clear(session, alert_id=404, by="ada")
