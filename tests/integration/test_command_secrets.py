"""Secrets in commands under attack, on a real stack (FakeDevice in open mode: the broker
takes any client). The admin sets a Wi-Fi password; a viewer watches the API and the
WebSocket, a webhook receives command updates, the platform's log is read; an operator
tries to set one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from logging import WARNING
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from sqlalchemy import select

from iotp.db.engine import make_engine
from iotp.db.models import CommandRow
from iotp.protocol.secrets import REDACTED
from tests.control_support import FakeDevice, command_status, device_status
from tests.integration.test_webhooks_e2e import Receiver
from tests.support import OPEN, Stack, login, run_stack

SECRET = "hunter2-wifi-password"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # The webhook receiver is on loopback.
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, webhook_allow_private=True) as s:
        yield s


async def user_token(stack: Stack, name: str, role: str) -> dict[str, str]:
    password = f"{name}-password"
    r = await stack.http.post(
        "/api/users", json={"username": name, "password": password, "role": role}
    )
    assert r.status_code == 201
    return {"Authorization": f"Bearer {await login(stack.http, name, password)}"}


async def stored(stack: Stack, cid: str) -> CommandRow:
    engine = make_engine(stack.settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(CommandRow).where(CommandRow.id == cid))).one()
    finally:
        await engine.dispose()
    return row  # type: ignore[return-value]


async def test_a_secret_parameter_reaches_the_device_and_nobody_else(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iotp")
    viewer = await user_token(stack, "vera", "viewer")
    operator = await user_token(stack, "otto", "operator")
    dev = await FakeDevice(stack, "SECRET000001").start()
    receiver = Receiver()
    await receiver.start()
    stack.cleanup.append(receiver.stop)
    r = await stack.http.post(
        "/api/webhooks",
        json={"name": "watcher", "url": receiver.url, "events": ["command_update"]},
    )
    assert r.status_code == 201, r.text
    hook_id = r.json()["id"]
    automations = stack.worker.automations

    async def subscribed() -> bool:
        return any(s.webhook_id == hook_id for s in automations._subs)

    await stack.wait_for(subscribed)
    seen: list[str] = []
    url = stack.api_url.replace("http", "ws", 1) + "/api/ws?token=" + viewer["Authorization"][7:]
    async with websockets.connect(url, open_timeout=10) as ws:
        subscribe = {"action": "subscribe", "events": ["command_update"], "devices": [dev.id]}
        await ws.send(orjson.dumps(subscribe).decode())
        assert orjson.loads(await ws.recv())["type"] == "subscribed"

        async def watch() -> None:
            async for message in ws:
                seen.append(str(message))

        watcher = asyncio.create_task(watch())
        body = {"command": "set_config", "params": {"wifi_password": SECRET, "interval": 5}}
        r = await stack.http.post(f"/api/devices/{dev.id}/commands", json=body, headers=operator)
        assert r.status_code == 403
        assert "admin" in r.json()["detail"]
        r = await stack.http.post(f"/api/devices/{dev.id}/commands", json=body)
        assert r.status_code == 201
        assert SECRET not in r.text
        assert r.json()["params"] == {"wifi_password": REDACTED, "interval": 5}
        cid = r.json()["id"]
        await command_status(stack, cid, "acked")
        # The device got the real value.
        assert dev.received[-1]["params"]["wifi_password"] == SECRET
        r = await stack.http.get(f"/api/commands/{cid}", headers=viewer)
        assert SECRET not in r.text
        r = await stack.http.get(f"/api/devices/{dev.id}/commands", headers=viewer)
        assert SECRET not in r.text

        async def acked_event() -> bool:
            return any('"acked"' in m for m in seen)

        await stack.wait_for(acked_event)
        watcher.cancel()
    assert not any(SECRET in m for m in seen)

    async def acked_hook() -> bool:
        return any(b'"acked"' in q.body for q in receiver.of_type("command_update"))

    await stack.wait_for(acked_hook)
    assert not any(SECRET.encode() in q.body for q in receiver.requests)
    # What the platform logs at its most verbose (IOTP_LOG_LEVEL=DEBUG): its own
    # records, and warnings of the libraries it quiets (iotp.logs.setup). A library's
    # debug dump of the MQTT wire is the wire itself.
    logged = [r for r in caplog.records if r.name.startswith("iotp") or r.levelno >= WARNING]
    leaks = [r for r in logged if SECRET in r.getMessage()]
    assert not leaks, [(r.name, r.levelname, r.getMessage()[:300]) for r in leaks]
    # Nothing kept once the command has ended, not even the device's echo.
    row = await stored(stack, cid)
    assert row.secret_params is None
    assert SECRET not in orjson.dumps([row.params, row.result]).decode()


async def test_secrets_are_refused_where_they_would_be_copied(stack: Stack) -> None:
    dev = await FakeDevice(stack, "SECRET000002").start()
    r = await stack.http.post(
        "/api/commands/bulk",
        json={
            "selector": {"devices": [dev.id]},
            "command": "set_config",
            "params": {"fleet_secret": SECRET},
        },
    )
    result = r.json()["data"][0]
    assert result["ok"] is False
    assert "secret parameters" in result["error"]
    assert SECRET not in r.text


async def test_a_queued_secret_is_encrypted_at_rest_and_erased_after(stack: Stack) -> None:
    dev = await FakeDevice(stack, "SECRET000003").start()
    await dev.stop()
    await device_status(stack, dev.id, "offline")
    body = {"command": "set_config", "params": {"mqtt_password": SECRET}, "ttl": 60}
    r = await stack.http.post(f"/api/devices/{dev.id}/commands", json=body)
    assert r.json()["status"] == "queued"
    cid = r.json()["id"]
    row = await stored(stack, cid)
    assert row.secret_params
    assert SECRET not in row.secret_params
    await dev.start(wait_online=False)
    await command_status(stack, cid, "acked")
    assert dev.received[-1]["params"]["mqtt_password"] == SECRET
    assert (await stored(stack, cid)).secret_params is None


async def test_a_device_echoing_a_secret_in_its_state_shows_it_to_nobody(stack: Stack) -> None:
    viewer = await user_token(stack, "val", "viewer")
    dev = await FakeDevice(stack, "SECRET000004").start()
    echo = {"relays": {"light": "on"}, "config": {"ssid": "home", "wifi_password": SECRET}}
    dev.client.publish(dev.topic("state"), orjson.dumps(echo))  # type: ignore[union-attr]

    async def reported() -> dict[str, Any] | None:
        r = await stack.http.get(f"/api/devices/{dev.id}", headers=viewer)
        state: dict[str, Any] | None = r.json()["reported_state"] if r.is_success else None
        # The device's own state at start has a config too: wait for the echo.
        return state if state and state.get("config", {}).get("ssid") == "home" else None

    state = await stack.wait_for(reported)
    assert state == {
        "relays": {"light": "on"},
        "config": {"ssid": "home", "wifi_password": REDACTED},
    }
    r = await stack.http.get(f"/api/devices/{dev.id}/shadow", headers=viewer)
    assert SECRET not in r.text
