"""Prometheus scrape endpoint of the API. Not under /api: nginx
does not route it; Prometheus scrapes each replica directly with a viewer API key."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from iotp.api.deps import SessionDep, StateDep
from iotp.metrics import render_api_metrics
from iotp.services import credentials as cred_service
from iotp.services import devices as device_service
from iotp.services import stats as stats_service

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep, session: SessionDep) -> Response:
    by_status = await device_service.count_by_status(session)
    fleet = await stats_service.fleet(session, time.time())
    credentials, conflicts = await cred_service.provisioning_counts(session)
    body, content_type = render_api_metrics(
        ws_clients=len(state.hub.clients),
        ws_dropped=state.hub.dropped_total,
        mqtt_connected=state.link.is_connected,
        fleet=fleet,
        by_status=by_status,
        credentials=credentials,
        provisioning_conflicts=conflicts,
    )
    return Response(body, media_type=content_type)
