"""Health and statistics."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import text

from iotp.api.deps import SessionDep, StateDep
from iotp.api.schemas import (
    ActivityPublic,
    HealthPublic,
    StatsHistoryPublic,
    StatsPublic,
)
from iotp.services import activity as activity_service
from iotp.services import devices as device_service
from iotp.services import stats as stats_service

router = APIRouter(prefix="/api", tags=["system"])
log = logging.getLogger(__name__)


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def health(state: StateDep, session: SessionDep, response: Response) -> HealthPublic:
    detail: dict[str, str] = {}
    workers = 0
    try:
        await session.execute(text("SELECT 1"))
        database = "ok"
        workers = (await stats_service.fleet(session, time.time()))["workers"]
    except Exception as exc:  # noqa: BLE001 - health reports any database failure
        database = "error"
        # The endpoint is public: the reason goes to the log, not to whoever asks.
        detail["database"] = "unavailable (the API log says why)"
        log.warning("health: database check failed: %s: %s", type(exc).__name__, exc)
    mqtt = "ok" if state.link.is_connected else "disconnected"
    healthy = database == "ok" and mqtt == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(
        status="ok" if healthy else "degraded",
        database=database,
        mqtt=mqtt,
        workers=workers,
        detail=detail,
    )


@router.get("/stats", response_model=StatsPublic)
async def stats(state: StateDep, session: SessionDep) -> StatsPublic:
    by_status = await device_service.count_by_status(session)
    agg = await stats_service.fleet(session, time.time())
    # This process's own WebSocket clients count now, not at its last stats write.
    agg["websocket_clients"] = max(agg["websocket_clients"], len(state.hub.clients))
    return StatsPublic(
        devices_total=sum(by_status.values()),
        devices_online=by_status.get("online", 0),
        devices_offline=by_status.get("offline", 0),
        uptime_seconds=round(time.time() - state.started_at, 1),
        **agg,
    )


@router.get("/stats/history", response_model=StatsHistoryPublic)
async def stats_history(
    session: SessionDep, window: Literal["1h", "24h"] = "1h"
) -> StatsHistoryPublic:
    points = await stats_service.history(
        session, window=stats_service.HISTORY_WINDOWS[window], now=time.time()
    )
    return StatsHistoryPublic.model_validate({"window": window, "points": points})


@router.get("/activity", response_model=ActivityPublic)
async def activity(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> ActivityPublic:
    items = await activity_service.recent(session, limit=limit)
    return ActivityPublic.model_validate({"data": items, "count": len(items)})
