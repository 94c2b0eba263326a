"""Command pipeline end to end: REST -> MQTT -> device -> ack -> REST/WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pytest
import websockets
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from iotp.api import control as api_control
from iotp.db.auth_models import DeviceCredential
from iotp.db.models import CommandRow, DeviceShadow, RolloutDevice
from iotp.services import commands as command_service
from iotp.services import credentials as credential_service
from iotp.worker.service import Worker
from tests.control_support import FakeDevice, command_status, device_status, small_bundle
from tests.support import Stack


async def test_relay_command_waits_for_the_ack(stack: Stack) -> None:
    dev = await FakeDevice(stack, "CMD000000001").start()
    r = await stack.http.post(
        f"/api/devices/{dev.id}/commands?wait=true",
        json={"command": "relay", "params": {"name": "light", "state": "on"}},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "acked"
    assert body["result"] == {"name": "light", "state": True}
    assert body["sent_at"] is not None
    assert body["finished_at"] is not None
    assert dev.received[0]["id"] == body["id"]
    assert dev.received[0]["params"] == {"name": "light", "state": "on"}
    history = (await stack.get(f"/api/devices/{dev.id}/commands"))["data"]
    assert [c["id"] for c in history] == [body["id"]]
    assert (await stack.get(f"/api/devices/{dev.id}/commands", status="failed"))["count"] == 0
    # servo, reboot, thresholds, ping: each acked by the device
    for command, params in [
        ("servo", {"angle": 180}),
        ("automation", {"fan_temp_on": 29.5, "light_on": "18:30"}),
        ("set_config", {"interval": 5}),
        ("reboot", {}),
        ("ping", {}),
    ]:
        r = await stack.http.post(
            f"/api/devices/{dev.id}/commands?wait=true",
            json={"command": command, "params": params},
        )
        assert r.status_code == 201, (command, r.text)
        assert r.json()["status"] == "acked", (command, r.text)
    assert dev.state["servo"] == 180
    assert dev.state["automation"]["fan_temp_on"] == 29.5


async def test_bad_input_gets_a_clear_4xx(stack: Stack) -> None:
    dev = await FakeDevice(stack, "CMD000000002", caps=["relay:light"]).start()
    url = f"/api/devices/{dev.id}/commands"
    cases = [
        ({"command": "servo", "params": {"angle": 90}}, 422, "servo"),  # no capability
        ({"command": "relay", "params": {"name": "pump", "state": "on"}}, 422, "pump"),
        ({"command": "relay", "params": {"name": "light", "state": "dim"}}, 422, "state"),
        ({"command": "launch"}, 422, "unknown command"),
        ({"command": "relay", "params": {}, "timeout": 0}, 422, "timeout"),
        ({"command": "relay", "params": {}, "ttl": -1}, 422, "ttl"),
        ({"command": "relay", "bogus": 1}, 422, "bogus"),
        ({"params": {}}, 422, "command"),
    ]
    for body, code, reason in cases:
        r = await stack.http.post(url, json=body)
        assert r.status_code == code, (body, r.text)
        assert reason in r.text, (body, r.text)
    full = await FakeDevice(stack, "CMD000000003").start()
    r = await stack.http.post(
        f"/api/devices/{full.id}/commands", json={"command": "servo", "params": {"angle": 181}}
    )
    assert r.status_code == 422
    assert "0..180" in r.json()["detail"]
    r = await stack.http.post("/api/devices/NOPE/commands", json={"command": "ping"})
    assert r.status_code == 404
    assert (await stack.http.get("/api/commands/nope")).status_code == 404
    assert (await stack.http.delete("/api/commands/nope")).status_code == 404
    assert (await stack.http.get("/api/devices/NOPE/commands")).status_code == 404
    r = await stack.http.get(f"/api/devices/{full.id}/commands", params={"status": "weird"})
    assert r.status_code == 422
    assert not dev.received
    assert not full.received


async def test_offline_device_gets_queued_command_when_back(stack: Stack) -> None:
    dev = await FakeDevice(stack, "CMD000000004").start()
    await dev.stop()
    await device_status(stack, dev.id, "offline")
    r = await stack.http.post(
        f"/api/devices/{dev.id}/commands",
        json={"command": "servo", "params": {"angle": 45}, "ttl": 60},
    )
    cmd = r.json()
    assert cmd["status"] == "queued"
    short = await stack.http.post(
        f"/api/devices/{dev.id}/commands", json={"command": "ping", "ttl": 0.3}
    )
    await command_status(stack, short.json()["id"], "expired")
    assert (await stack.get(f"/api/commands/{cmd['id']}"))["status"] == "queued"
    await dev.start(wait_online=False)
    done = await command_status(stack, cmd["id"], "acked")
    assert done["result"] == {"angle": 45}
    assert [c["command"] for c in dev.received] == ["servo"]  # the expired one never went


async def test_timeout_error_cancel_and_late_ack(stack: Stack) -> None:
    dev = await FakeDevice(stack, "CMD000000005", mode="silent").start()
    r = await stack.http.post(
        f"/api/devices/{dev.id}/commands?wait=true", json={"command": "ping", "timeout": 0.5}
    )
    timed_out = r.json()
    assert timed_out["status"] == "timed_out", timed_out
    dev.ack(timed_out["id"], "ok", {})
    late = await stack.wait_for(
        lambda: _notes(stack, timed_out["id"]),
    )
    assert late[0]["note"] == "late_ack"
    dev.mode = "error"
    r = await stack.http.post(f"/api/devices/{dev.id}/commands?wait=true", json={"command": "ping"})
    assert r.json()["status"] == "failed"
    assert r.json()["error"] == "simulated failure"
    await dev.stop()
    await device_status(stack, dev.id, "offline")
    queued = (
        await stack.http.post(f"/api/devices/{dev.id}/commands", json={"command": "ping"})
    ).json()
    r = await stack.http.delete(f"/api/commands/{queued['id']}")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    r = await stack.http.delete(f"/api/commands/{queued['id']}")
    assert r.status_code == 409
    assert "cancelled" in r.json()["detail"]
    r = await stack.http.delete(f"/api/commands/{timed_out['id']}")
    assert r.status_code == 409


async def _notes(stack: Stack, cid: str) -> list[dict[str, object]]:
    notes: list[dict[str, object]] = (await stack.get(f"/api/commands/{cid}"))["notes"]
    return notes


async def test_duplicate_unknown_and_foreign_acks_are_ignored_and_counted(stack: Stack) -> None:
    a = await FakeDevice(stack, "CMD000000006", mode="silent").start()
    b = await FakeDevice(stack, "CMD000000007", mode="silent").start()
    cmd = (await stack.http.post(f"/api/devices/{a.id}/commands", json={"command": "ping"})).json()
    await command_status(stack, cmd["id"], "sent")
    b.ack(cmd["id"], "ok", {"forged": True})  # another device's command: not its to ack
    b.ack("no-such-command", "ok", {})
    b.ack(None, "error", error="unparseable")

    async def counted() -> dict[str, int] | None:
        c: dict[str, int] = (await stack.get("/api/commands/stats"))["counters"]
        return c if c.get("acks_unknown", 0) >= 2 and c.get("acks_unparsed", 0) >= 1 else None

    await stack.wait_for(counted)
    assert (await stack.get(f"/api/commands/{cmd['id']}"))["status"] == "sent"
    for _ in range(3):
        a.ack(cmd["id"], "ok", {"n": 1})
    done = await command_status(stack, cmd["id"], "acked")
    assert done["result"] == {"n": 1}

    async def duplicates() -> bool:
        c = (await stack.get("/api/commands/stats"))["counters"]
        return bool(c.get("acks_duplicate", 0) >= 2)

    await stack.wait_for(duplicates)


async def test_state_survives_a_worker_restart(stack: Stack) -> None:
    dev = await FakeDevice(stack, "CMD000000008", mode="silent").start()
    cmd = (
        await stack.http.post(
            f"/api/devices/{dev.id}/commands", json={"command": "ping", "timeout": 30}
        )
    ).json()
    await command_status(stack, cmd["id"], "sent")
    await stack.worker.stop()
    # The broker (Mosquitto, or the embedded one: iotp.broker.embedded.OpenAuthPlugin)
    # keeps the worker's persistent session: an ack that arrives while no
    # worker runs is delivered after the restart.
    dev.ack(cmd["id"], "ok", {"uptime": 1})
    assert (await stack.get(f"/api/commands/{cmd['id']}"))["status"] == "sent"
    worker = Worker(stack.settings, stack.worker.engine, stack.mqtt_url)
    await worker.start()
    stack.cleanup.append(worker.stop)  # the stack stops the worker it started
    stack.worker = worker
    done = await command_status(stack, cmd["id"], "acked")
    assert done["result"] == {"uptime": 1}


async def test_bulk_by_tag_with_per_device_results(stack: Stack) -> None:
    devs = [await FakeDevice(stack, f"BULK0000000{i}").start() for i in range(3)]
    nosrv = await FakeDevice(stack, "BULK00000009", caps=["relay:light"]).start()
    r = await stack.http.post(
        "/api/tags/kitchen/devices", json={"add": [d.id for d in [*devs, nosrv]] + ["GHOST"]}
    )
    assert r.json() == {"tag": "kitchen", "changed": 4, "unknown_devices": ["GHOST"]}
    assert {"tag": "kitchen", "count": 4} in await stack.get("/api/tags")
    r = await stack.http.post(
        "/api/commands/bulk?wait=true",
        json={"selector": {"tags": ["kitchen"]}, "command": "servo", "params": {"angle": 10}},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 3
    assert body["rejected"] == 1
    assert body["by_status"] == {"acked": 3}
    by_id = {x["device_id"]: x for x in body["data"]}
    assert not by_id[nosrv.id]["ok"]
    assert "servo" in by_id[nosrv.id]["error"]
    r = await stack.http.post(
        "/api/commands/bulk",
        json={"selector": {"devices": [devs[0].id, "GHOST"]}, "command": "ping"},
    )
    assert {x["device_id"]: x["ok"] for x in r.json()["data"]} == {devs[0].id: True, "GHOST": False}
    r = await stack.http.post("/api/commands/bulk", json={"selector": {}, "command": "ping"})
    assert r.status_code == 422
    assert "selector" in r.json()["detail"]
    r = await stack.http.post("/api/tags/bad tag!/devices", json={"add": []})
    assert r.status_code == 422


async def test_every_transition_is_a_websocket_event(stack: Stack) -> None:
    dev = await FakeDevice(stack, "CMD000000010").start()
    async with websockets.connect(stack.ws_url) as ws:
        await ws.send(
            orjson.dumps(
                {"action": "subscribe", "events": ["command_update"], "devices": [dev.id]}
            ).decode()
        )
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        r = await stack.http.post(
            f"/api/devices/{dev.id}/commands?wait=true",
            json={"command": "relay", "params": {"name": "fan", "state": "toggle"}},
        )
        cid = r.json()["id"]
        # Online: the API claims the command at creation and publishes it itself.
        assert await _statuses(ws, cid, until=("sent", "acked")) == ["sending", "sent", "acked"]
        # Offline: queued until the device is back, then the worker sends it.
        await dev.stop()
        await device_status(stack, dev.id, "offline")
        cid = (
            await stack.http.post(f"/api/devices/{dev.id}/commands", json={"command": "ping"})
        ).json()["id"]
        await dev.start(wait_online=False)
        seen = await _statuses(ws, cid, until=("sent", "acked"))
        assert seen == ["queued", "sending", "sent", "acked"]


async def _statuses(ws: Any, cid: str, *, until: Iterable[str]) -> list[str]:
    """command_update statuses of one command, in arrival order, until all of ``until``
    were seen. (`sent` comes from the publisher, `acked` from the worker: two processes
    in production, so they are sorted by the step they record.)"""
    seen: list[str] = []
    while not set(until) <= set(seen):
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        if event.get("type") == "command_update" and event["payload"]["id"] == cid:
            seen.append(event["payload"]["status"])
    order = ["queued", "sending", "sent", "acked"]
    return sorted(seen, key=order.index)


@pytest.mark.parametrize("n", [1])
async def test_ack_flood_does_not_disturb_other_devices(stack: Stack, n: int) -> None:
    noisy = await FakeDevice(stack, "FLOOD0000001").start()
    calm = await FakeDevice(stack, "FLOOD0000002").start()
    assert noisy.client is not None
    for i in range(2000):
        noisy.ack(f"junk-{i}", "ok", {})
    r = await stack.http.post(
        f"/api/devices/{calm.id}/commands?wait=true", json={"command": "ping", "timeout": 5}
    )
    assert r.json()["status"] == "acked"


async def test_publisher_lost_after_its_claim_is_never_sent_and_is_resent(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash window: a command is claimed (`sending`, committed) and its publisher
    dies before publishing. It must not show `sent`, and it must still be delivered."""
    monkeypatch.setattr(command_service, "CLAIM_TIMEOUT", 1.5)
    dev = await FakeDevice(stack, "CRASH0000001").start()
    # The API process "dies" right after committing its claim: the publish never runs.
    monkeypatch.setattr(api_control, "send_claimed", lambda state, rows: None)
    r = await stack.http.post(
        f"/api/devices/{dev.id}/commands", json={"command": "servo", "params": {"angle": 7}}
    )
    cmd = r.json()
    assert cmd["status"] == "sending"
    # Bounded: nothing is published while the claim is fresh (it goes stale at 1.5 s).
    await asyncio.sleep(0.8)
    now = await stack.get(f"/api/commands/{cmd['id']}")
    assert now["status"] == "sending"
    assert now["sent_at"] is None
    assert dev.received == []
    # The claim goes stale; the worker's sweep re-queues the command and publishes it.
    done = await command_status(stack, cmd["id"], "acked")
    assert done["result"] == {"angle": 7}
    assert [c["id"] for c in dev.received] == [cmd["id"]]
    assert any(n.get("note") == "resend" for n in done["notes"]), done["notes"]


async def test_unconfirmed_publish_is_not_sent_and_is_published_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker does not acknowledge the publish: the command goes back to queued
    (never `sent`) and the next dispatch delivers it."""
    dev = await FakeDevice(stack, "CRASH0000002").start()
    await dev.stop()
    await device_status(stack, dev.id, "offline")
    cmd = (
        await stack.http.post(f"/api/devices/{dev.id}/commands", json={"command": "ping"})
    ).json()
    assert cmd["status"] == "queued"
    sender = stack.worker.control.sender
    real = sender._publish_confirmed
    attempts = 0
    statuses: set[str] = set()

    async def refused(topic: str, payload: bytes) -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("no PUBACK")

    monkeypatch.setattr(sender, "_publish_confirmed", refused)
    await dev.start(wait_online=False)

    async def retried() -> bool:
        statuses.add((await stack.get(f"/api/commands/{cmd['id']}"))["status"])
        return attempts >= 2

    await stack.wait_for(retried)
    assert "sent" not in statuses
    assert dev.received == []
    monkeypatch.setattr(sender, "_publish_confirmed", real)
    done = await command_status(stack, cmd["id"], "acked")
    assert done["sent_at"] is not None
    assert [c["id"] for c in dev.received] == [cmd["id"]]
    assert [n["reason"] for n in done["notes"] if n.get("note") == "resend"][:1] == [
        "publish not confirmed"
    ]


async def test_ack_before_the_brokers_puback_is_accepted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device can answer before the publisher has seen the PUBACK (the command is
    still `sending`): the ack counts, and the command is reported sent, then acked."""
    dev = await FakeDevice(stack, "CRASH0000003").start()
    await dev.stop()
    await device_status(stack, dev.id, "offline")
    cmd = (
        await stack.http.post(f"/api/devices/{dev.id}/commands", json={"command": "ping"})
    ).json()
    sender = stack.worker.control.sender
    real, real_send = sender._publish_confirmed, sender.send
    acked, recorded = asyncio.Event(), asyncio.Event()

    async def late_puback(topic: str, payload: bytes) -> None:
        await real(topic, payload)
        await acked.wait()  # the PUBACK reaches the sender only after the device's ack

    async def send(rows: Sequence[CommandRow]) -> list[CommandRow]:
        try:
            return await real_send(rows)
        finally:
            recorded.set()  # the sender has recorded what the PUBACK tells

    monkeypatch.setattr(sender, "_publish_confirmed", late_puback)
    monkeypatch.setattr(sender, "send", send)
    async with websockets.connect(stack.ws_url) as ws:
        await ws.send(
            orjson.dumps(
                {"action": "subscribe", "events": ["command_update"], "devices": [dev.id]}
            ).decode()
        )
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await dev.start(wait_online=False)
        done = await command_status(stack, cmd["id"], "acked")
        acked.set()
        assert done["sent_at"] is not None
        seen = await _statuses(ws, cmd["id"], until=("sent", "acked"))
        assert seen == ["sending", "sent", "acked"]
    await asyncio.wait_for(recorded.wait(), 10)
    # The late PUBACK changed nothing.
    assert (await stack.get(f"/api/commands/{cmd['id']}"))["status"] == "acked"


async def test_deleting_a_device_leaves_no_control_rows_behind(stack: Stack) -> None:
    dev = await FakeDevice(stack, "GONE00000001", mode="silent").start()
    keep = await FakeDevice(stack, "KEEP00000001", mode="silent").start()
    for d in (dev, keep):
        r = await stack.http.post(f"/api/devices/{d.id}/commands", json={"command": "ping"})
        await command_status(stack, r.json()["id"], "sent")
        r = await stack.http.put(f"/api/devices/{d.id}/shadow", json={"desired": {"servo": 30}})
        assert r.status_code == 200, r.text
    fw = await stack.http.post(
        "/api/firmware",
        params={"version": "9.9.9"},
        content=small_bundle("9.9.9"),
        headers={"content-type": "application/octet-stream"},
    )
    r = await stack.http.post(
        "/api/rollouts",
        json={"firmware_id": fw.json()["id"], "selector": {"devices": [dev.id, keep.id]}},
    )
    assert r.status_code == 201, r.text
    sessions = async_sessionmaker(stack.worker.engine, expire_on_commit=False)
    async with sessions.begin() as session:
        for d in (dev, keep):
            await credential_service.issue(session, device_id=d.id)
    tables = {
        "commands": CommandRow.device_id,
        "device_shadows": DeviceShadow.device_id,
        "rollout_devices": RolloutDevice.device_id,
        "device_credentials": DeviceCredential.device_id,
    }

    async def counts(device_id: str) -> dict[str, int]:
        async with sessions() as session:
            return {
                name: int(
                    await session.scalar(select(func.count()).where(column == device_id)) or 0
                )
                for name, column in tables.items()
            }

    assert all((await counts(dev.id)).values()), await counts(dev.id)
    await dev.stop()
    assert (await stack.http.delete(f"/api/devices/{dev.id}")).status_code == 204
    assert await counts(dev.id) == dict.fromkeys(tables, 0)
    assert all((await counts(keep.id)).values())  # other devices keep theirs
    assert (await stack.http.get(f"/api/devices/{dev.id}/commands")).status_code == 404
    rollout = await stack.get(f"/api/rollouts/{r.json()['id']}")
    assert [d["device_id"] for d in rollout["devices"]] == [keep.id]


async def test_wait_is_answered_by_the_devices_own_ack(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """?wait=true ends on the device's ack itself, not on the worker's record of it:
    while the worker is held before recording acks, the answer still comes (and only
    from the right device); the worker then records the same ack."""
    dev = await FakeDevice(stack, "CMD000000020", mode="silent").start()
    other = await FakeDevice(stack, "CMD000000021", mode="silent").start()
    control = stack.worker.control
    assert control is not None
    record = control.on_ack
    held = asyncio.Event()
    seen: list[str | None] = []

    async def on_ack_held(device_id: str, ack: Any, now: float) -> None:
        seen.append(ack.id)
        await held.wait()
        await record(device_id, ack, now)

    monkeypatch.setattr(control, "on_ack", on_ack_held)
    waiting = asyncio.create_task(
        stack.http.post(
            f"/api/devices/{dev.id}/commands?wait=true", json={"command": "ping", "timeout": 20}
        )
    )

    async def received() -> bool:
        return bool(dev.received)

    await stack.wait_for(received)
    cid = dev.received[0]["id"]
    await command_status(stack, cid, "sent")
    other.ack(cid, "ok", {"forged": True})  # not its command: does not end the wait
    await asyncio.sleep(0.5)  # bounded: an answer it took for this one would be here by now
    assert not waiting.done()
    dev.ack(cid, "ok", {"uptime": 7})
    r = await asyncio.wait_for(waiting, 10)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "acked"
    assert r.json()["result"] == {"uptime": 7}
    # the worker has the ack but has not recorded it yet
    assert cid in seen
    assert (await stack.get(f"/api/commands/{cid}"))["status"] == "sent"
    held.set()
    done = await command_status(stack, cid, "acked")
    assert done["result"] == {"uptime": 7}
