"""Every API route against every role, generated from app.routes: a route added later
anywhere is covered (and protected) without touching this file."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi.routing import APIRoute, iter_route_contexts

from iotp.api.app import create_app
from iotp.settings import Settings
from tests.support import OPEN, TEST_ADMIN_PASSWORD, Stack, login, run_stack

# The whole contract, written out independently of iotp.api.security.
PUBLIC = {
    ("/api/health", "GET"),
    ("/api/auth/token", "POST"),
    ("/api/auth/refresh", "POST"),
    ("/api/auth/logout", "POST"),
}
# Public, but signed in by the session cookie: without one, 401 whatever the bearer.
SESSION_COOKIE = {("/api/auth/refresh", "POST")}
SELF_SERVICE = {"/api/auth/me", "/api/auth/password"}
ADMIN_ONLY = re.compile(r"^/api/(users|api-keys|credentials)(/|$)")
RANK = {"viewer": 0, "operator": 1, "admin": 2}


def needed(path: str, method: str, route: Any) -> str | None:
    if (path, method) in PUBLIC:
        return None
    declared = (route.openapi_extra or {}).get("x-iotp-role")
    if declared:
        return str(declared)
    if path in SELF_SERVICE:
        return "viewer"
    if ADMIN_ONLY.match(path):
        return "admin"
    return "viewer" if method in ("GET", "HEAD") else "operator"


def api_routes() -> list[tuple[str, str, Any]]:
    """(path template, method, route) for every HTTP route of the real app."""
    app = create_app(Settings(data_dir=Path("/nonexistent")))
    out = []
    for ctx in iter_route_contexts(app.routes):
        path, methods = ctx.path, ctx.methods
        if isinstance(ctx.original_route, APIRoute) and path and path.startswith("/api"):
            out.extend((path, method, ctx.original_route) for method in sorted(methods or ()))
    return out


def concrete(path: str, route: APIRoute) -> str:
    for param in route.dependant.path_params:
        value = "999999" if param.field_info.annotation is int else "matrix-missing-1"
        path = re.sub(r"\{" + param.name + r"(:[^}]*)?\}", value, path)
    return path


@pytest.fixture
async def roles(tmp_path: Path) -> AsyncIterator[tuple[Stack, dict[str, dict[str, str]]]]:
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack:
        headers: dict[str, dict[str, str]] = {"none": {}, "admin": dict(stack.http.headers)}
        for role in ("viewer", "operator"):
            r = await stack.http.post(
                "/api/users", json={"username": role, "password": f"{role}-password", "role": role}
            )
            assert r.status_code == 201, r.text
            token = await login(stack.http, role, f"{role}-password")
            headers[role] = {"Authorization": f"Bearer {token}"}
        r = await stack.http.post("/api/api-keys", json={"name": "matrix", "role": "viewer"})
        headers["viewer-key"] = {"X-API-Key": r.json()["key"]}
        yield stack, headers


def test_every_api_route_is_in_the_matrix() -> None:
    routes = api_routes()
    assert len(routes) >= 20
    public = {(p, m) for p, m, _ in routes if (p, m) in PUBLIC}
    assert public == PUBLIC, "the public allow-list changed: update PUBLIC on purpose"


async def test_authorization_matrix(roles: tuple[Stack, dict[str, dict[str, str]]]) -> None:
    stack, headers = roles
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=20) as http:
        for path, method, route in api_routes():
            need = needed(path, method, route)
            url = concrete(path, route)
            for who in ("none", "viewer", "viewer-key", "operator", "admin"):
                role = who.removesuffix("-key")
                r = await http.request(method, url, headers=headers[who])
                if (path, method) in SESSION_COOKIE:
                    ok = r.status_code == 401 and "no session" in r.text
                elif need is None:
                    ok = r.status_code not in (401, 403)
                elif who == "none":
                    ok = r.status_code == 401
                elif RANK[role] < RANK[need]:
                    ok = r.status_code == 403
                else:
                    ok = r.status_code not in (401, 403)
                if r.status_code >= 500:
                    ok = False
                if not ok:
                    failures.append(f"{method} {path} as {who}: {r.status_code} (needs {need})")
    assert not failures, "\n".join(failures)


async def test_websocket_needs_a_token(roles: tuple[Stack, dict[str, dict[str, str]]]) -> None:
    stack, headers = roles
    base = stack.api_url.replace("http", "ws", 1) + "/api/ws"
    for url in (base, base + "?token=bogus", base + "?token="):
        with pytest.raises(websockets.exceptions.WebSocketException):
            async with websockets.connect(url) as ws:
                await ws.recv()
    viewer_token = headers["viewer"]["Authorization"].split()[1]
    async with websockets.connect(f"{base}?token={viewer_token}") as ws:
        await ws.send('{"action": "ping"}')
        assert "pong" in await ws.recv()
    key = headers["viewer-key"]["X-API-Key"]
    async with websockets.connect(f"{base}?token={key}") as ws:
        await ws.send('{"action": "ping"}')
        assert "pong" in await ws.recv()


async def test_websocket_ends_when_its_token_expires(tmp_path: Path) -> None:
    async with run_stack(
        "embedded-sqlite", tmp_path, mode=OPEN, access_token_minutes=0.05
    ) as stack:
        token = await login(stack.http, "admin", TEST_ADMIN_PASSWORD)  # lives 3 s
        url = stack.api_url.replace("http", "ws", 1) + f"/api/ws?token={token}"
        async with websockets.connect(url) as ws:
            await ws.send('{"action": "ping"}')
            assert "pong" in await ws.recv()
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
