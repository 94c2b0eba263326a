"""Device shadow: desired vs reported, convergence by commands, also after reconnect."""

from __future__ import annotations

from tests.control_support import FakeDevice, device_status
from tests.support import Stack


async def _shadow(stack: Stack, device_id: str) -> dict:  # type: ignore[type-arg]
    body: dict = await stack.get(f"/api/devices/{device_id}/shadow")  # type: ignore[type-arg]
    return body


async def test_shadow_converges_and_reports_in_sync(stack: Stack) -> None:
    dev = await FakeDevice(stack, "SHADOW000001").start()
    await stack.wait_for(lambda: _reported(stack, dev.id))
    desired = {
        "relays": {"light": True},
        "servo": 90,
        "automation": {"fan_temp_on": 30.0},
        "config": {"interval": 5},
    }
    r = await stack.http.put(f"/api/devices/{dev.id}/shadow", json={"desired": desired})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["in_sync"] is False
    assert first["version"] == 1
    assert first["delta"]["servo"] == 90
    assert first["delta"]["relays"] == {"light": True}

    async def synced() -> bool:
        return bool((await _shadow(stack, dev.id))["in_sync"])

    await stack.wait_for(synced)
    assert dev.state["relays"]["light"] is True
    assert dev.state["servo"] == 90
    assert dev.state["automation"]["fan_temp_on"] == 30.0
    assert dev.state["config"]["interval"] == 5
    sources = {c["source"] for c in (await stack.get(f"/api/devices/{dev.id}/commands"))["data"]}
    assert sources == {"shadow"}
    # PATCH merges; null removes a key from desired
    r = await stack.http.patch(
        f"/api/devices/{dev.id}/shadow", json={"desired": {"servo": None, "relays": {"fan": True}}}
    )
    assert r.json()["desired"] == {
        "relays": {"light": True, "fan": True},
        "automation": {"fan_temp_on": 30.0},
        "config": {"interval": 5},
    }
    await stack.wait_for(synced)
    assert dev.state["relays"]["fan"] is True


async def _reported(stack: Stack, device_id: str) -> bool:
    return bool((await _shadow(stack, device_id))["reported"])


async def test_shadow_is_applied_when_the_device_comes_back(stack: Stack) -> None:
    dev = await FakeDevice(stack, "SHADOW000002").start()
    await stack.wait_for(lambda: _reported(stack, dev.id))
    await dev.stop()
    await device_status(stack, dev.id, "offline")
    r = await stack.http.put(
        f"/api/devices/{dev.id}/shadow", json={"desired": {"relays": {"light": True}, "servo": 33}}
    )
    assert r.json()["delta"] == {"relays": {"light": True}, "servo": 33}
    assert not dev.received
    # the device "reboots" with relays off; the platform closes the delta on reconnect
    await dev.start(wait_online=False)

    async def synced() -> bool:
        return bool((await _shadow(stack, dev.id))["in_sync"])

    await stack.wait_for(synced)
    assert dev.state["servo"] == 33


async def test_shadow_gives_up_on_a_device_that_cannot_comply(stack: Stack) -> None:
    dev = await FakeDevice(stack, "SHADOW000003", mode="error").start()
    await stack.wait_for(lambda: _reported(stack, dev.id))
    await stack.http.put(f"/api/devices/{dev.id}/shadow", json={"desired": {"servo": 10}})

    async def gave_up() -> dict | None:  # type: ignore[type-arg]
        s = await _shadow(stack, dev.id)
        return s if (s["last_error"] or "").startswith("gave up") else None

    s = await stack.wait_for(gave_up)
    assert s["in_sync"] is False
    assert s["attempts"] == 3
    assert "simulated failure" in s["last_error"]
    assert len(dev.received) == 3


async def test_bad_desired_state_is_rejected(stack: Stack) -> None:
    dev = await FakeDevice(stack, "SHADOW000004", caps=["relay:light"]).start()
    url = f"/api/devices/{dev.id}/shadow"
    cases = [
        ({"desired": {"color": "red"}}, "unknown key"),
        ({"desired": {"relays": {"pump": True}}}, "pump"),
        ({"desired": {"relays": {"light": "on"}}}, "true, false"),
        ({"desired": {"servo": 90}}, "servo"),
        ({"desired": {"config": {"wifi_ssid": "x"}}}, "unsupported"),
        ({"desired": {"relays": {}}, "extra": 1}, "extra"),
        ({}, "desired"),
    ]
    for body, reason in cases:
        r = await stack.http.put(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert reason in r.text, (body, r.text)
    full = await FakeDevice(stack, "SHADOW000005").start()
    r = await stack.http.patch(f"/api/devices/{full.id}/shadow", json={"desired": {"servo": 181}})
    assert r.status_code == 422
    assert "0..180" in r.text
    r = await stack.http.put(
        f"/api/devices/{full.id}/shadow",
        json={"desired": {"automation": {"light_on": "25:00"}}},
    )
    assert r.status_code == 422
    assert "HH:MM" in r.text
    assert (await stack.http.get("/api/devices/NOPE/shadow")).status_code == 404
    assert (
        await stack.http.put("/api/devices/NOPE/shadow", json={"desired": {}})
    ).status_code == 404
    empty = await _shadow(stack, dev.id)
    assert empty["desired"] == {}
    assert empty["in_sync"] is True
    assert empty["version"] == 0
