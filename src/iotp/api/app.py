"""App factory. Long-lived resources (engine, MQTT link, WebSocket hub) live in the
lifespan, never at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from iotp import __version__
from iotp.api import errors, security
from iotp.api.routes import (
    adapters,
    alerts,
    apikeys,
    auth,
    commands,
    credentials,
    devices,
    firmware,
    groups,
    info,
    pairing,
    rollouts,
    rules,
    shadow,
    system,
    users,
    webhooks,
)
from iotp.api.routes import metrics as metrics_routes  # operations
from iotp.api.state import ApiState
from iotp.db.engine import make_engine
from iotp.settings import Settings

LANDING = """<!doctype html><html><head><title>IoT Platform</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>IoT Platform</h1><p>The API is running. The dashboard is not built yet
(<code>make web</code>). Meanwhile: <a href="/docs">API docs</a>,
<a href="/api/devices">devices</a>, <a href="/api/stats">stats</a>.</p></body></html>"""


class SpaFiles(StaticFiles):
    """The built dashboard; any other path (a client-side route such as /devices/X)
    gets index.html, so a reload on a deep link works. /api stays a real 404."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            missing_file = "." in path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or missing_file or path.split("/", 1)[0] == "api":
                raise
            return await super().get_response("index.html", scope)


def web_dist() -> Path | None:
    for candidate in (
        Path(__file__).resolve().parents[3] / "web" / "dist",
        Path(__file__).resolve().parents[1] / "_web",
    ):
        if (candidate / "index.html").is_file():
            return candidate
    return None


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    mqtt_default: str = "mqtt://127.0.0.1:1883",
    device_mqtt_url: str = "",
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        db = engine or make_engine(settings.effective_database_url)
        state = ApiState(settings, db, mqtt_default, device_mqtt_url)
        app.state.iotp = state
        await security.startup(app, state)  # security: signing key, first admin
        await state.start()
        try:
            yield
        finally:
            await state.stop()
            if own_engine:
                await db.dispose()

    app = FastAPI(
        title="IoT Platform API",
        version=__version__,
        lifespan=lifespan,
        description="Devices, telemetry, live events. Device protocol: docs/protocol.md.",
        # security: every route needs a token unless listed in security.PUBLIC_PATHS
        dependencies=[Depends(security.authorize)],
    )
    security.install(app, settings)
    errors.install(app)
    for router in (auth.router, users.router, apikeys.router, credentials.router, pairing.router):
        app.include_router(router)
    app.include_router(system.router)
    app.include_router(devices.router)
    app.include_router(devices.fleet_router)
    app.include_router(info.router)
    app.include_router(adapters.router)
    app.include_router(metrics_routes.router)  # operations: Prometheus /metrics
    for control_router in (commands, shadow, firmware, rollouts, groups):  # device control
        app.include_router(control_router.router)
    for automation_router in (rules, alerts, webhooks):
        app.include_router(automation_router.router)

    @app.websocket("/api/ws")
    async def websocket(ws: WebSocket) -> None:
        """Live events. Send {"action": "subscribe", "events": [...], "devices": ["*"]}."""
        state: ApiState = ws.app.state.iotp
        await state.hub.serve(ws)

    dist = web_dist()
    if dist is not None:
        app.mount("/", SpaFiles(directory=dist, html=True), name="web")
    else:
        # Public like the dashboard it stands in for: it holds no data.
        @app.get("/", include_in_schema=False, openapi_extra={security.ROLE_KEY: security.PUBLIC})
        async def landing() -> HTMLResponse:
            return HTMLResponse(LANDING)

    return app
