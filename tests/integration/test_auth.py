"""Sign-in, tokens, API keys, users, throttling and HTTP hardening, on a real stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import OPEN, TEST_ADMIN_PASSWORD, Stack, login, run_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, login_max_failures=3) as s:
        yield s


def anon(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api_url, timeout=10)


async def test_login_refresh_me_and_password_change(stack: Stack) -> None:
    async with anon(stack) as http:
        assert (await http.get("/api/devices")).status_code == 401
        assert (await http.get("/api/health")).status_code == 200
        r = await http.post("/api/auth/token", data={"username": "admin", "password": "nope"})
        assert r.status_code == 401
        r = await http.post(
            "/api/auth/token", data={"username": "admin", "password": TEST_ADMIN_PASSWORD}
        )
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        pair = r.json()
        csrf = {"X-CSRF-Token": pair["csrf_token"]}
        assert pair["token_type"] == "bearer"
        assert pair["expires_in"] > 0
        me = await http.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )
        assert me.json() == {"kind": "user", "id": 1, "name": "admin", "role": "admin"}
        # An access token is not a refresh token, and the refresh token is no bearer.
        as_cookie = {"Cookie": f"iotp_refresh={pair['access_token']}"}
        r = await http.post("/api/auth/refresh", headers={**csrf, **as_cookie})
        assert r.status_code == 401
        bad = await http.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {http.cookies['iotp_refresh']}"}
        )
        assert bad.status_code == 401
        r = await http.post("/api/auth/refresh", headers=csrf)
        assert r.status_code == 200
        fresh = r.json()["access_token"]
        auth = {"Authorization": f"Bearer {fresh}"}
        r = await http.post(
            "/api/auth/password",
            json={"current_password": TEST_ADMIN_PASSWORD, "new_password": "another-password"},
            headers=auth,
        )
        assert r.status_code == 204
        # Changing the password signs out every token issued before.
        assert (await http.get("/api/auth/me", headers=auth)).status_code == 401
        r = await http.post("/api/auth/refresh", headers=csrf)
        assert r.status_code == 401
        assert await login(http, "admin", "another-password")


async def test_brute_force_login_is_slowed(stack: Stack) -> None:
    async with anon(stack) as http:
        for _ in range(3):
            r = await http.post("/api/auth/token", data={"username": "admin", "password": "x"})
            assert r.status_code == 401
        # Past the limit even the right password is refused until the window moves on.
        r = await http.post(
            "/api/auth/token", data={"username": "admin", "password": TEST_ADMIN_PASSWORD}
        )
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0


async def test_api_keys_are_shown_once_listed_by_prefix_and_revocable(stack: Stack) -> None:
    r = await stack.http.post("/api/api-keys", json={"name": "grafana", "role": "viewer"})
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith(f"iotp_{created['prefix']}_")
    listed = (await stack.http.get("/api/api-keys")).json()
    assert listed["count"] == 1
    assert "key" not in listed["data"][0]
    assert "key_hash" not in listed["data"][0]
    assert listed["data"][0]["prefix"] == created["prefix"]
    async with anon(stack) as http:
        assert (await http.get("/api/devices", headers={"X-API-Key": key})).status_code == 200
        as_bearer = {"Authorization": f"Bearer {key}"}
        assert (await http.get("/api/devices", headers=as_bearer)).status_code == 200
        # A viewer key cannot change anything.
        r = await http.patch("/api/devices/X1", json={"name": "n"}, headers=as_bearer)
        assert r.status_code == 403
        r = await stack.http.post(f"/api/api-keys/{created['id']}/revoke")
        assert r.json()["revoked_at"] is not None
        assert (await http.get("/api/devices", headers={"X-API-Key": key})).status_code == 401
        tampered = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
        r = await http.get("/api/devices", headers={"X-API-Key": tampered})
        assert r.status_code == 401


async def test_user_management_never_returns_secrets(stack: Stack) -> None:
    r = await stack.http.post(
        "/api/users", json={"username": "olga", "password": "operator-pw", "role": "operator"}
    )
    assert r.status_code == 201
    user = r.json()
    assert set(user) == {"id", "username", "role", "disabled", "created_at"}
    dup = await stack.http.post(
        "/api/users", json={"username": "olga", "password": "operator-pw", "role": "viewer"}
    )
    assert dup.status_code == 409
    token = await login(stack.http, "olga", "operator-pw")
    r = await stack.http.patch(f"/api/users/{user['id']}", json={"disabled": True})
    assert r.status_code == 200
    async with anon(stack) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401  # disabled users are signed out at once
        r = await http.post("/api/auth/token", data={"username": "olga", "password": "operator-pw"})
        assert r.status_code == 401
    # The last admin cannot lock everyone out.
    me = (await stack.http.get("/api/auth/me")).json()
    r = await stack.http.patch(f"/api/users/{me['id']}", json={"role": "viewer"})
    assert r.status_code == 422
    assert (await stack.http.delete(f"/api/users/{me['id']}")).status_code == 422
    assert (await stack.http.delete(f"/api/users/{user['id']}")).status_code == 204
    text = (await stack.http.get("/api/users")).text
    assert "argon2" not in text
    assert "password" not in text


async def test_security_headers_and_body_limit(stack: Stack) -> None:
    async with anon(stack) as http:
        r = await http.get("/api/health")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        big = b"x" * (stack.settings.max_request_bytes + 1)
        r = await http.post("/api/auth/token", content=big)
        assert r.status_code == 413

        async def chunks():  # no Content-Length: counted while streaming
            for _ in range(stack.settings.max_request_bytes // 65536 + 2):
                yield b"y" * 65536

        r = await http.post(
            "/api/users", content=chunks(), headers={"Authorization": f"Bearer {stack.token}"}
        )
        assert r.status_code == 413


async def test_websocket_is_cut_at_once_when_its_user_loses_access(stack: Stack) -> None:
    """On the replica that made the change the check runs at once (the other replicas
    within a second: tests/integration/test_auth_replicas.py)."""
    import asyncio
    import time

    import orjson
    import websockets
    from websockets.exceptions import ConnectionClosed

    r = await stack.http.post(
        "/api/users", json={"username": "wendy", "password": "wendy-password", "role": "viewer"}
    )
    wendy = r.json()["id"]
    token = await login(stack.http, "wendy", "wendy-password")
    url = stack.api_url.replace("http", "ws", 1) + f"/api/ws?token={token}"
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(orjson.dumps({"action": "ping"}).decode())
        assert orjson.loads(await ws.recv()) == {"type": "pong"}
        started = time.monotonic()
        r = await stack.http.patch(f"/api/users/{wendy}", json={"password": "changed-password"})
        assert r.status_code == 200
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1008, "revoked")
        assert time.monotonic() - started < 3.0  # generous: usually well under 0.1 s
    async with anon(stack) as http:
        r = await http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
