"""Automation rules: CRUD, enable/disable, templates, dry run against recent history.
Workers pick up changes within about a second (they poll the rule set's version)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from iotp.api.deps import SessionDep
from iotp.api.schemas import iso
from iotp.automation.spec import Rule, RuleBody
from iotp.db.automation_models import RuleRow
from iotp.services import rules as rule_service

router = APIRouter(prefix="/api/rules", tags=["rules"])


class RulePublic(RuleBody):
    id: int
    created_at: datetime
    updated_at: datetime
    last_fired_at: datetime | None
    fire_count: int

    @classmethod
    def of(cls, row: RuleRow) -> RulePublic:
        rule = rule_service.to_rule(row)
        return cls.model_validate(
            {
                **rule.model_dump(),
                "created_at": iso(row.created_at),
                "updated_at": iso(row.updated_at),
                "last_fired_at": iso(row.last_fired_at),
                "fire_count": row.fire_count,
            }
        )


class RulesPublic(BaseModel):
    data: list[RulePublic]
    count: int


class RuleEnabled(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


class TemplatePublic(BaseModel):
    id: str
    title: str
    description: str
    rules: list[dict[str, Any]]


class DryRunWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hours: float = Field(default=24, gt=0, le=168, description="the last N hours")


class DryRunRequest(DryRunWindow):
    rule: RuleBody


class FiringPublic(BaseModel):
    ts: datetime
    kind: str = Field(description="fire | clear")
    device_id: str | None
    context: dict[str, Any]


class DryRunPublic(BaseModel):
    since: datetime
    until: datetime
    samples: int
    truncated: bool
    fired: int
    cleared: int
    firings: list[FiringPublic]


@router.get("", response_model=RulesPublic)
async def list_rules(
    session: SessionDep,
    enabled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RulesPublic:
    rows, total = await rule_service.list_rules(
        session, enabled=enabled, limit=limit, offset=offset
    )
    return RulesPublic(data=[RulePublic.of(r) for r in rows], count=total)


@router.post("", response_model=RulePublic, status_code=status.HTTP_201_CREATED)
async def create_rule(session: SessionDep, body: RuleBody) -> RulePublic:
    row = await rule_service.create(session, body=body)
    await session.commit()
    return RulePublic.of(row)


@router.get("/templates", response_model=list[TemplatePublic])
async def templates() -> list[TemplatePublic]:
    """Starting points mirroring the firmware's own automations."""
    return [TemplatePublic(id=k, **v) for k, v in rule_service.TEMPLATES.items()]


async def _dry_run(session: SessionDep, rule: Rule, hours: float) -> DryRunPublic:
    until = time.time()
    since = until - hours * 3600
    firings, samples, truncated = await rule_service.dry_run(
        session, rule=rule, since=since, until=until
    )
    return DryRunPublic(
        since=iso(since),
        until=iso(until),
        samples=samples,
        truncated=truncated,
        fired=sum(1 for f in firings if f.kind == "fire"),
        cleared=sum(1 for f in firings if f.kind == "clear"),
        firings=[
            FiringPublic(ts=iso(f.ts), kind=f.kind, device_id=f.device_id, context=f.context)
            for f in firings[:1000]
        ],
    )


@router.post("/dry-run", response_model=DryRunPublic)
async def dry_run(session: SessionDep, body: DryRunRequest) -> DryRunPublic:
    """When would this (unsaved) rule have fired over the last hours? Nothing is sent."""
    rule = Rule.model_validate({**body.rule.model_dump(), "id": 0})
    return await _dry_run(session, rule, body.hours)


@router.get("/{rule_id}", response_model=RulePublic)
async def get_rule(session: SessionDep, rule_id: int) -> RulePublic:
    return RulePublic.of(await rule_service.get(session, rule_id))


@router.put("/{rule_id}", response_model=RulePublic)
async def replace_rule(session: SessionDep, rule_id: int, body: RuleBody) -> RulePublic:
    row = await rule_service.replace(session, rule_id=rule_id, body=body)
    await session.commit()
    return RulePublic.of(row)


@router.patch("/{rule_id}", response_model=RulePublic)
async def set_enabled(session: SessionDep, rule_id: int, body: RuleEnabled) -> RulePublic:
    row = await rule_service.set_enabled(session, rule_id=rule_id, enabled=body.enabled)
    await session.commit()
    return RulePublic.of(row)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(session: SessionDep, rule_id: int) -> Response:
    await rule_service.delete(session, rule_id=rule_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{rule_id}/dry-run", response_model=DryRunPublic)
async def dry_run_saved(
    session: SessionDep, rule_id: int, body: DryRunWindow | None = None
) -> DryRunPublic:
    rule = rule_service.to_rule(await rule_service.get(session, rule_id))
    return await _dry_run(session, rule, body.hours if body else 24)
