"""Sign-in under attack, on a real stack (the API's own users; devices play no part).

Each client binds its own loopback address (127.0.0.2, 127.0.0.3, ...), so the API sees
the attacker and the real admin as different addresses, as it would on a network."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from iotp.db.auth_models import LoginFailure
from tests.support import OPEN, TEST_ADMIN_PASSWORD, Stack, run_stack

MAX_FAILURES = 3


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with run_stack(
        "embedded-sqlite", tmp_path, mode=OPEN, login_max_failures=MAX_FAILURES
    ) as s:
        yield s


def client_from(stack: Stack, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=stack.api_url, timeout=30, transport=transport)


async def guess(http: httpx.AsyncClient, password: str, username: str = "admin") -> int:
    r = await http.post("/api/auth/token", data={"username": username, "password": password})
    return r.status_code


async def test_an_attack_does_not_lock_the_admin_out_from_another_address(stack: Stack) -> None:
    """The attacker hammers `admin` with wrong passwords over several connections; the
    real admin, from another address, still signs in within 5 s."""
    codes: list[int] = []
    stop = asyncio.Event()

    async def attacker(http: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            codes.append(await guess(http, f"wrong-{n}"))
            n += 1

    async with client_from(stack, "127.0.0.2") as evil, client_from(stack, "127.0.0.3") as good:
        # What one sign-in costs on this machine right now (a loaded CI machine may take
        # seconds): the attack may add at most 5 s to it.
        started = time.monotonic()
        assert await guess(good, TEST_ADMIN_PASSWORD) == 200
        baseline = time.monotonic() - started
        tasks = [asyncio.create_task(attacker(evil)) for _ in range(3)]
        try:
            await stack.wait_for(lambda: 429 in codes, timeout=20)
            started = time.monotonic()
            assert await guess(good, TEST_ADMIN_PASSWORD) == 200
            assert time.monotonic() - started < 5.0 + baseline
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    # The attacker's own address was stopped after the limit; its guesses were few.
    assert codes.count(401) <= MAX_FAILURES
    assert codes.count(429) > 0


async def test_parallel_guesses_do_not_each_get_a_free_try(stack: Stack) -> None:
    async with client_from(stack, "127.0.0.4") as evil:
        codes = await asyncio.gather(*(guess(evil, f"wrong-{i}") for i in range(24)))
    assert codes.count(401) <= MAX_FAILURES, codes
    assert set(codes) <= {401, 429}


async def test_guessing_other_users_from_one_address_is_stopped(stack: Stack) -> None:
    """Password spraying: one address, many usernames (each under its own limit)."""
    limit = stack.settings.login_address_max_failures
    async with client_from(stack, "127.0.0.5") as evil:
        codes = [await guess(evil, "Winter2026!", f"user{i}") for i in range(limit + 5)]
    assert codes.count(401) == limit
    assert codes[limit:] == [429] * 5


async def test_password_change_guessing_is_throttled(stack: Stack) -> None:
    """A stolen access token is not a free password oracle."""
    wrong = {"current_password": "not-it", "new_password": "whatever-password"}
    codes = [
        (await stack.http.post("/api/auth/password", json=wrong)).status_code for _ in range(6)
    ]
    assert codes[:MAX_FAILURES] == [400] * MAX_FAILURES
    assert codes[MAX_FAILURES:] == [429] * (6 - MAX_FAILURES)


async def test_a_sign_in_burst_leaves_the_database_to_ingest(stack: Stack) -> None:
    """Guesses from many addresses at once (none over its own limit) queue for Argon2;
    queued, they must not hold the database connections that ingest (the same process
    and pool in `iotp serve`) needs. A device (open mode, no credentials) reports during
    the attack: its readings are stored while the attack still runs."""
    engine = stack.worker.engine
    guesses = 24
    device = await stack.device("VICTIM000001")
    before = (await stack.get("/api/stats"))["messages_stored"]
    held: list[int] = []  # connections checked out, sampled through the attack
    clients = [client_from(stack, f"127.0.1.{i + 1}") for i in range(guesses)]
    attack = asyncio.gather(*(guess(c, f"wrong-{i}") for i, c in enumerate(clients)))

    async def sample() -> None:
        while not attack.done():
            held.append(engine.pool.checkedout())  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)

    async def recorded() -> bool:
        # Each attempt is recorded before it is verified: then all of them are queued.
        async with engine.connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(LoginFailure))
        return (rows or 0) >= 3 * guesses

    sampler = asyncio.create_task(sample())
    try:
        await stack.wait_for(recorded, timeout=20)
        for seq in range(20):
            device.publish("devices/VICTIM000001/data", f'{{"t": {seq}, "seq": {seq}}}')

        async def stored() -> bool:
            stats = await stack.get("/api/stats")
            return bool(stats["messages_stored"] >= before + 20)

        await stack.wait_for(stored, timeout=20)
        assert not attack.done(), "the burst ended first: the test proves nothing"
        codes = await attack
        await sampler
    finally:
        for c in clients:
            await c.aclose()
    assert set(codes) <= {401, 429}, codes
    # Recording the attempts takes connections for a moment, as any burst of writes
    # does; waiting for Argon2 (most of the attack) must not.
    typical = statistics.median(held)
    assert typical <= 3, f"typically {typical} connections held (at most {max(held)})"
