"""Sessions under attack, on a real stack (the API's own users; no devices take part):
a copied refresh token, a session that should end at logout, a forged request from
another site, a WebSocket that outlives its token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support import OPEN, TEST_ADMIN_PASSWORD, Stack, run_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Access tokens of 3 s, so that a WebSocket's expiry is seen within the test.
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, access_token_minutes=0.05) as s:
        yield s


def browser(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api_url, timeout=10)


async def sign_in(http: httpx.AsyncClient) -> dict[str, str]:
    r = await http.post(
        "/api/auth/token", data={"username": "admin", "password": TEST_ADMIN_PASSWORD}
    )
    assert r.status_code == 200
    body: dict[str, str] = r.json()
    return body


async def refresh(http: httpx.AsyncClient, csrf: str, cookie: str | None = None) -> httpx.Response:
    headers = {"X-CSRF-Token": csrf}
    if cookie:  # sent as the browser would, instead of the client's own cookie
        headers["Cookie"] = f"iotp_refresh={cookie}"
    return await http.post("/api/auth/refresh", headers=headers)


async def test_the_refresh_token_stays_out_of_page_scripts(stack: Stack) -> None:
    async with browser(stack) as http:
        r = await http.post(
            "/api/auth/token", data={"username": "admin", "password": TEST_ADMIN_PASSWORD}
        )
        assert "refresh_token" not in r.json()
        cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
        assert "httponly" in cookies["iotp_refresh"]
        assert "samesite=strict" in cookies["iotp_refresh"]
        assert "path=/api/auth" in cookies["iotp_refresh"]
        assert "httponly" not in cookies["iotp_csrf"]  # the page reads it to send it back


async def test_a_forged_cross_site_refresh_or_logout_is_refused(stack: Stack) -> None:
    async with browser(stack) as http:
        csrf = (await sign_in(http))["csrf_token"]
        # The browser sends the cookie along; a page of another site cannot add the header.
        assert (await http.post("/api/auth/refresh")).status_code == 403
        assert (await refresh(http, "0" * 64)).status_code == 403
        assert (await http.post("/api/auth/logout")).status_code == 403
        assert (await refresh(http, csrf)).status_code == 200  # the session still works


async def test_a_copied_refresh_token_revokes_its_session(stack: Stack) -> None:
    async with browser(stack) as victim, browser(stack) as thief:
        csrf = (await sign_in(victim))["csrf_token"]
        stolen = victim.cookies["iotp_refresh"]
        assert (await refresh(victim, csrf)).status_code == 200  # rotated on use
        assert victim.cookies["iotp_refresh"] != stolen
        # The thief replays the old token: refused, and the whole session ends.
        r = await refresh(thief, csrf, stolen)
        assert r.status_code == 401
        assert "reused" in r.json()["detail"]
        assert (await refresh(victim, csrf)).status_code == 401
        # Signing in again starts a new session.
        csrf = (await sign_in(victim))["csrf_token"]
        assert (await refresh(victim, csrf)).status_code == 200


async def test_logout_revokes_the_session_on_the_server(stack: Stack) -> None:
    async with browser(stack) as victim, browser(stack) as thief:
        csrf = (await sign_in(victim))["csrf_token"]
        stolen = victim.cookies["iotp_refresh"]
        r = await victim.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        assert "iotp_refresh" not in victim.cookies
        assert (await refresh(thief, csrf, stolen)).status_code == 401


async def test_a_websocket_signed_in_by_header_ends_with_its_token(stack: Stack) -> None:
    """Also with a forged, unsigned ``?token=`` that claims to expire in 2100: the
    expiry that counts is the verified token's."""
    async with browser(stack) as http:
        access = (await sign_in(http))["access_token"]
    forged = jwt.encode({"sub": "1", "exp": 4_102_444_800}, "not-the-key" * 4, algorithm="HS256")
    url = stack.api_url.replace("http", "ws", 1) + f"/api/ws?token={forged}"
    headers = {"Authorization": f"Bearer {access}"}
    started = time.monotonic()
    async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:

        async def until_closed() -> None:
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()

        with pytest.raises(ConnectionClosed):
            await until_closed()
        assert (ws.close_code, ws.close_reason) == (1008, "expired")
    assert time.monotonic() - started < 10
