"""Sign-in security across API replicas: two API processes (`python -m iotp.cli api`, as
in production) sharing one database. A user deleted, re-roled or an API key revoked
through one replica loses its open WebSockets and its tokens on the other within a
second or two; failed sign-ins count on every replica together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import websockets
from websockets.exceptions import ConnectionClosed

from tests.fault.procs import STARTING, run_cluster
from tests.support import TEST_ADMIN_PASSWORD, amqtt_broker, eventually, login, migrate_database

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MAX_FAILURES = 3
# Enforced on the other replica within REVOCATION_POLL_SECONDS (1 s) plus a query:
# generous for a loaded 2-core CI machine.
CUT_WITHIN = 4.0


@dataclass
class Replicas:
    a: str  # base URLs of the two API processes
    b: str
    admin: httpx.AsyncClient  # signed in as admin, talks to replica a


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    db_url = f"sqlite+aiosqlite:///{tmp / 'iotp.db'}"
    await migrate_database(db_url)
    async with (
        amqtt_broker() as broker,
        run_cluster(
            "auth",
            tmp,
            db_url,
            broker.url,
            apis=2,
            secret_key="k" * 48,
            login_max_failures=MAX_FAILURES,
            login_window_seconds=300,
        ) as cluster,
    ):
        a, b = (f"http://127.0.0.1:{port}" for _, port in cluster.apis)
        async with httpx.AsyncClient(base_url=a, timeout=10) as admin:
            admin.headers["Authorization"] = (
                f"Bearer {await login(admin, 'admin', TEST_ADMIN_PASSWORD)}"
            )
            yield Replicas(a, b, admin)


async def open_ws(base: str, token: str) -> Any:
    url = base.replace("http", "ws", 1) + f"/api/ws?token={token}"
    ws = await websockets.connect(url, open_timeout=10)
    await ws.send(orjson.dumps({"action": "subscribe", "events": ["device_status"]}).decode())
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
    return ws


async def closed_within(ws: Any, seconds: float) -> tuple[int | None, str, float]:
    """Waits for the server to close ws; returns (code, reason, seconds it took)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while True:
            try:
                await ws.recv()
            except ConnectionClosed:
                return ws.close_code, ws.close_reason, time.monotonic() - started


async def user_token(r: Replicas, base: str, name: str, role: str) -> tuple[int, str]:
    created = await r.admin.post(
        "/api/users", json={"username": name, "password": f"{name}-password", "role": role}
    )
    assert created.status_code == 201, created.text
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return created.json()["id"], await login(http, name, f"{name}-password")


async def status_with(base: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        return r.status_code


async def test_revocations_cut_websockets_and_tokens_on_the_other_replica(r: Replicas) -> None:
    _, admin_token = await user_token(r, r.a, "ada", "admin")
    vera_id, vera = await user_token(r, r.a, "vera", "viewer")
    otto_id, otto = await user_token(r, r.a, "otto", "operator")
    key = (await r.admin.post("/api/api-keys", json={"name": "grafana"})).json()
    control = await open_ws(r.b, admin_token)
    ws_vera = await open_ws(r.b, vera)
    ws_otto = await open_ws(r.b, otto)
    ws_key = await open_ws(r.b, key["key"])
    assert await status_with(r.b, vera) == 200

    # Deleted on replica a: cut on replica b, and its token refused there.
    assert (await r.admin.delete(f"/api/users/{vera_id}")).status_code == 204
    code, reason, took = await closed_within(ws_vera, CUT_WITHIN)
    assert (code, reason) == (1008, "revoked"), took
    await eventually(
        lambda: _refused(r.b, vera), timeout=CUT_WITHIN, interval=0.1, retry_on=STARTING
    )

    # A new role: the WebSocket signed in with the old one goes too.
    r1 = await r.admin.patch(f"/api/users/{otto_id}", json={"role": "viewer"})
    assert r1.status_code == 200
    code, reason, _ = await closed_within(ws_otto, CUT_WITHIN)
    assert (code, reason) == (1008, "revoked")
    assert await status_with(r.b, otto) == 401

    # A revoked API key.
    assert (await r.admin.post(f"/api/api-keys/{key['id']}/revoke")).status_code == 200
    code, reason, _ = await closed_within(ws_key, CUT_WITHIN)
    assert (code, reason) == (1008, "revoked")

    # Nobody else was disconnected.
    await control.send(orjson.dumps({"action": "ping"}).decode())
    assert orjson.loads(await asyncio.wait_for(control.recv(), 5)) == {"type": "pong"}
    await control.close()


async def _refused(base: str, token: str) -> bool:
    return await status_with(base, token) == 401


@pytest.fixture
def r(replicas: Replicas) -> Replicas:
    return replicas


async def test_failed_sign_ins_count_on_every_replica(r: Replicas) -> None:
    """Runs last in this module: it throttles 127.0.0.1 for the window."""
    bases = [r.a, r.b, r.a]
    for base in bases[:MAX_FAILURES]:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            bad = await http.post("/api/auth/token", data={"username": "admin", "password": "x"})
            assert bad.status_code == 401
    for base in (r.b, r.a):  # the right password, on either replica: still refused
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            r2 = await http.post(
                "/api/auth/token", data={"username": "admin", "password": TEST_ADMIN_PASSWORD}
            )
            assert r2.status_code == 429
            assert int(r2.headers["retry-after"]) > 250
