"""Webhooks end to end on real parts: a local HTTP receiver (started in the test)
verifies every request's signature exactly as docs/automations.md tells users to; the
worker keeps retrying while the receiver is down and while it answers 500; the delivery
log in the API shows the attempts; a dead target is disabled with an alert."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from iotp.netutil import free_port
from tests.conftest import STACKS
from tests.support import OPEN, Stack, eventually, run_stack

# Fast retries so the test sees several attempts within seconds.
FAST_RETRIES: dict[str, Any] = {
    "webhook_allow_private": True,  # the receiver is on loopback
    "webhook_backoff_seconds": 0.2,
    "webhook_max_attempts": 10,
    "webhook_timeout_seconds": 2.0,
}


@pytest.fixture(params=STACKS)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with run_stack(request.param, tmp_path, mode=OPEN, **FAST_RETRIES) as s:
        yield s


# ---- the receiver: what a user writes ---------------------------------------------------


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """Verbatim from docs/automations.md ("Verify (Python)")."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    t = int(parts["t"])
    if abs(time.time() - t) > tolerance:  # replay protection
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass
class Receiver:
    """A tiny ASGI app on a loopback port; answers 500 to the first ``fail_first``
    requests, then 204. The port is chosen up front so a webhook can point at it
    before anything listens there."""

    fail_first: int = 0
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/iotp"

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status = 500 if len(self.requests) < self.fail_first else 204
        self.requests.append(Request(headers, body, status))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send(
            {"type": "http.response.body", "body": b"down for a bit" if status == 500 else b""}
        )

    async def start(self) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        server = self._server
        task = self._task = asyncio.create_task(server.serve())
        await eventually(lambda: server.started or task.done(), what="the receiver listens")
        if not server.started:
            await task  # re-raises the start-up error
            raise AssertionError("the receiver did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task

    def of_type(self, event_type: str) -> list[Request]:
        return [r for r in self.requests if r.headers.get("x-iotp-event") == event_type]


async def _true(value: Any) -> Any:
    return value


async def _deliveries(stack: Stack, hook_id: int, **params: Any) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await stack.get(f"/api/webhooks/{hook_id}/deliveries", **params))[
        "data"
    ]
    return data


async def _create(stack: Stack, url: str, events: list[str], devices: list[str]) -> dict[str, Any]:
    r = await stack.http.post(
        "/api/webhooks", json={"name": "receiver", "url": url, "events": events, "devices": devices}
    )
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()
    return hook


# ---- tests -------------------------------------------------------------------------------


async def test_signed_delivery_retried_while_receiver_is_down(stack: Stack) -> None:
    receiver = Receiver(fail_first=1)  # not started yet: connection refused
    stack.cleanup.append(receiver.stop)
    dev = "WEBHOOKDEV01"
    hook = await _create(stack, receiver.url, ["device_registered"], [dev])
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    # Shown once: never again in any read.
    assert "secret" not in await stack.get(f"/api/webhooks/{hook['id']}")
    assert all("secret" not in h for h in (await stack.get("/api/webhooks"))["data"])
    engine_subs = stack.worker.automations
    await stack.wait_for(lambda: _true(any(s.webhook_id == hook["id"] for s in engine_subs._subs)))

    device = await stack.device()
    device.publish(f"devices/{dev}/data", orjson.dumps({"temperature": 21.5}))

    # The receiver is down: the worker logs failed attempts and keeps the event pending.
    async def failed_twice() -> Any:
        rows = await _deliveries(stack, hook["id"])
        return rows if rows and rows[0]["attempts"] >= 2 else None

    rows = await stack.wait_for(failed_twice, timeout=15)
    (pending,) = rows
    assert pending["status"] == "pending"
    assert pending["event_type"] == "device_registered"
    assert pending["device_id"] == dev
    assert pending["last_status_code"] is None
    assert "Connect" in (pending["last_error"] or "")
    assert pending["next_attempt_at"] is not None

    # Up, but answering 500 once; then 2xx.
    await receiver.start()

    async def delivered() -> Any:
        rows = await _deliveries(stack, hook["id"], status="delivered")
        return rows[0] if rows else None

    done = await stack.wait_for(delivered, timeout=20)
    assert done["attempts"] >= 4  # >= 2 refused + one 500 + the success
    assert done["last_status_code"] == 204
    assert done["last_error"] is None
    assert done["next_attempt_at"] is None
    assert done["finished_at"] is not None

    got = receiver.of_type("device_registered")
    assert [r.status for r in got] == [500, 204]
    for request in got:
        headers = request.headers
        assert verify(secret, headers["x-iotp-signature"], request.body)
        assert not verify(secret + "x", headers["x-iotp-signature"], request.body)
        assert not verify(secret, headers["x-iotp-signature"], request.body + b" ")
        assert headers["content-type"] == "application/json"
        assert headers["x-iotp-timestamp"] == headers["x-iotp-signature"].split(",")[0][2:]
        body = request.json
        assert body["type"] == "device_registered"
        assert body["device_id"] == dev
        assert headers["x-iotp-delivery"] == body["id"] == done["event_id"]
    # A retry is the same event (same delivery id), so receivers can drop repeats.
    assert got[0].json["id"] == got[1].json["id"]
    assert done["body"]["id"] == got[1].json["id"]

    # The webhook's health in the API.
    state = await stack.get(f"/api/webhooks/{hook['id']}")
    assert state["enabled"] is True
    assert state["consecutive_failures"] == 0
    assert state["last_success_at"] is not None
    assert state["last_failure_at"] is not None


async def test_test_button_rotate_secret_and_device_filter(stack: Stack) -> None:
    receiver = Receiver()
    await receiver.start()
    stack.cleanup.append(receiver.stop)
    hook = await _create(stack, receiver.url, ["device_registered"], ["ONLYTHISONE1"])

    r = await stack.http.post(f"/api/webhooks/{hook['id']}/test")
    assert r.status_code == 200, r.text
    outcome = r.json()
    assert outcome["status"] == "delivered"
    assert outcome["attempts"] == 1
    assert outcome["last_status_code"] == 204
    (test_request,) = receiver.of_type("test")
    assert verify(hook["secret"], test_request.headers["x-iotp-signature"], test_request.body)
    assert test_request.json["payload"]["webhook_id"] == hook["id"]

    # A new secret: the old one no longer verifies.
    r = await stack.http.post(f"/api/webhooks/{hook['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    new_secret = r.json()["secret"]
    assert new_secret != hook["secret"]
    await stack.http.post(f"/api/webhooks/{hook['id']}/test")
    second = receiver.of_type("test")[-1]
    assert verify(new_secret, second.headers["x-iotp-signature"], second.body)
    assert not verify(hook["secret"], second.headers["x-iotp-signature"], second.body)

    # Only the listed device's events are sent.
    automations = stack.worker.automations
    await stack.wait_for(lambda: _true(any(s.webhook_id == hook["id"] for s in automations._subs)))
    device = await stack.device()
    device.publish("devices/NOTLISTED001/data", b'{"temperature": 20}')
    device.publish("devices/ONLYTHISONE1/data", b'{"temperature": 20}')
    await stack.wait_for(lambda: _true(receiver.of_type("device_registered")), timeout=15)
    await asyncio.sleep(0.5)  # bounded: the other device's event would have come by now
    devices = [r.json["device_id"] for r in receiver.of_type("device_registered")]
    assert devices == ["ONLYTHISONE1"]
    log = await _deliveries(stack, hook["id"])
    assert {d["event_type"] for d in log} == {"test", "device_registered"}
    assert [d["status"] for d in log] == ["delivered"] * 3


async def test_dead_target_is_disabled_with_an_alert(tmp_path: Path) -> None:
    dead = Receiver()  # never started
    async with run_stack(
        "embedded-sqlite", tmp_path, mode=OPEN, **{**FAST_RETRIES, "webhook_disable_after": 3}
    ) as stack:
        hook = await _create(stack, dead.url, ["device_registered", "device_status"], [])
        automations = stack.worker.automations
        await stack.wait_for(
            lambda: _true(any(s.webhook_id == hook["id"] for s in automations._subs))
        )
        device = await stack.device()
        device.publish("devices/DEADHOOKDEV1/data", b'{"temperature": 20}')

        async def disabled() -> Any:
            state = await stack.get(f"/api/webhooks/{hook['id']}")
            return state if not state["enabled"] else None

        state = await stack.wait_for(disabled, timeout=20)
        assert state["consecutive_failures"] >= 3
        assert "3 failed attempts" in state["disabled_reason"]
        # Its queue ends as failed, nothing stays pending.
        rows = await _deliveries(stack, hook["id"])
        assert rows
        assert {d["status"] for d in rows} == {"failed"}, rows
        alerts = (await stack.get("/api/alerts", severity="warning"))["data"]
        assert any(
            a["status"] == "active" and f"Webhook {hook['name']} disabled" in a["name"]
            for a in alerts
        ), alerts

        # Re-enabled by a person: counting starts afresh.
        r = await stack.http.patch(f"/api/webhooks/{hook['id']}", json={"enabled": True})
        assert r.status_code == 200, r.text
        assert r.json()["consecutive_failures"] == 0
        assert r.json()["disabled_reason"] is None
