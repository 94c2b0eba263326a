"""OTA download URLs under attack, on a real stack (FakeDevice in open mode: the broker
takes any client; the URL is what is attacked). Each device's ota command carries a URL
signed for that device and that command; an attacker with a second, anonymous HTTP
client replays a victim's URL, retargets it and uses it late, while the victim's update
goes through."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from iotp.services import auth
from tests.control_support import FakeDevice, command_status, small_bundle
from tests.support import TEST_SECRET_KEY, Stack

BUNDLE = small_bundle("2.0.0")


class HeldDevice(FakeDevice):
    """A FakeDevice whose OTA waits for the test before downloading and before
    installing, so an attacker can act in each window."""

    def __init__(self, stack: Stack, device_id: str) -> None:
        super().__init__(stack, device_id, http=httpx.AsyncClient())
        stack.cleanup.append(self.http.aclose)
        self.may_download = asyncio.Event()
        self.may_install = asyncio.Event()
        self.download_status: int | None = None

    async def _ota(self, cid: str, params: dict[str, Any]) -> None:
        self.ack(cid, "progress", {"stage": "downloading", "percent": 0})
        await self.may_download.wait()
        response = await self.http.get(params["url"])  # no token: the URL is the grant
        self.download_status = response.status_code
        if response.status_code != 200:
            self.ack(cid, "error", error=f"download failed: HTTP {response.status_code}")
            return
        if hashlib.sha256(response.content).hexdigest() != params["sha256"]:
            self.ack(cid, "error", error="sha256 mismatch")
            return
        self.ack(cid, "progress", {"stage": "verifying"})
        await self.may_install.wait()
        self.ack(cid, "progress", {"stage": "installing", "percent": 100})
        await self.reboot(params["version"])
        self.ack(cid, "ok", {"version": params["version"]})


async def _upload(stack: Stack) -> Any:
    r = await stack.http.post(
        "/api/firmware",
        params={"version": "2.0.0"},
        content=BUNDLE,
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {**_query(url), **changes}
    return parts._replace(query=str(httpx.QueryParams(query))).geturl()


async def _refused(attacker: httpx.AsyncClient, url: str, reason: str) -> None:
    r = await attacker.get(url)
    assert r.status_code == 403, (url, r.status_code, r.text)
    assert reason in r.json()["detail"], r.text


async def _firmware_is(stack: Stack, device_id: str, version: str) -> bool:
    return bool((await stack.get(f"/api/devices/{device_id}"))["firmware_version"] == version)


async def _ota_command(device: FakeDevice, stack: Stack) -> dict[str, Any]:
    async def received() -> dict[str, Any] | None:
        return next((c for c in device.received if c["command"] == "ota"), None)

    found: dict[str, Any] = await stack.wait_for(received)
    return found


async def test_a_victims_rollout_url_is_useless_to_an_attacker(stack: Stack) -> None:
    victim = await HeldDevice(stack, "VICTIM000001").start()
    other = await FakeDevice(stack, "OTHER0000001").start()
    fw = await _upload(stack)
    r = await stack.http.post(
        "/api/rollouts",
        json={
            "firmware_id": fw["id"],
            "selector": {"devices": [victim.id, other.id]},
            "rate_per_minute": 6000,
            "failure_threshold": 1,
        },
    )
    assert r.status_code == 201, r.text
    rollout = r.json()
    assert "sig=" not in rollout["download_url"]  # the rollout's URL grants nothing
    victim_cmd = await _ota_command(victim, stack)
    other_cmd = await _ota_command(other, stack)
    url, other_url = victim_cmd["params"]["url"], other_cmd["params"]["url"]
    assert _query(url)["device"] == victim.id
    assert _query(url)["command"] == victim_cmd["id"]
    assert _query(other_url)["device"] == other.id
    # The URL lasts as long as the command can: its queue life and then its timeout.
    assert int(_query(url)["exp"]) <= time.time() + 2 * rollout["timeout"] + 1
    await command_status(stack, other_cmd["id"], "acked")

    async with httpx.AsyncClient() as attacker:  # no token, another client
        # Retargeted at another device or command, or made to last longer: forged.
        await _refused(attacker, _with(url, device=other.id), "does not match")
        await _refused(attacker, _with(url, command=other_cmd["id"]), "does not match")
        await _refused(attacker, _with(url, exp=str(int(time.time()) + 86400)), "does not match")
        unsigned = url.split("?", 1)[0]
        assert (await attacker.get(unsigned)).status_code == 401
        # A URL whose time has passed, for the victim's open command (only the install's
        # key makes one; the test holds it to stand for a URL kept too long).
        path = urlsplit(url).path
        late = auth.sign_path(
            path,
            key=TEST_SECRET_KEY,
            device_id=victim.id,
            command_id=victim_cmd["id"],
            expires_at=time.time() - 1,
        )
        await _refused(attacker, stack.api_url + late, "expired")
        # The other device's URL, replayed once its command has ended.
        await _refused(attacker, other_url, "ended (acked)")

        # The victim downloads with its URL; once it holds the bundle the URL is spent.
        victim.may_download.set()

        async def verifying() -> bool:
            cmd = await stack.get(f"/api/commands/{victim_cmd['id']}")
            return bool((cmd["progress"] or {}).get("stage") == "verifying")

        await stack.wait_for(verifying)
        assert victim.download_status == 200
        await _refused(attacker, url, "downloaded the bundle already")
        victim.may_install.set()
        await command_status(stack, victim_cmd["id"], "acked")
        await _refused(attacker, url, "ended (acked)")

    async def completed() -> Any:
        body = await stack.get(f"/api/rollouts/{rollout['id']}")
        return body if body["status"] == "completed" else None

    done = await stack.wait_for(completed, timeout=30)
    assert done["counts"]["installed"] == 2, done
    await stack.wait_for(lambda: _firmware_is(stack, victim.id, "2.0.0"))


async def test_a_single_ota_command_gets_a_url_for_its_device(stack: Stack) -> None:
    """``POST /api/devices/{id}/commands`` with the platform's download URL: the device
    gets it signed for itself and that command; other URLs are sent as given."""
    device = await FakeDevice(stack, "SINGLE000001", http=httpx.AsyncClient()).start()
    stack.cleanup.append(device.http.aclose)
    fw = await _upload(stack)
    params = {
        "url": stack.api_url + fw["download_path"],
        "sha256": fw["sha256"],
        "version": fw["version"],
    }
    r = await stack.http.post(
        f"/api/devices/{device.id}/commands", json={"command": "ota", "params": params}
    )
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    sent = r.json()["params"]["url"]
    assert sent.startswith(params["url"] + "?")
    assert _query(sent)["device"] == device.id
    assert _query(sent)["command"] == cid
    await command_status(stack, cid, "acked")
    await stack.wait_for(lambda: _firmware_is(stack, device.id, "2.0.0"))
    async with httpx.AsyncClient() as attacker:
        await _refused(attacker, sent, "ended (acked)")

    # Signed, a URL must still fit what devices accept: too long is a 422, not a cut.
    long_url = {**params, "url": "http://x/" + "p" * 400 + fw["download_path"]}
    r = await stack.http.post(
        f"/api/devices/{device.id}/commands", json={"command": "ota", "params": long_url}
    )
    assert r.status_code == 422, r.text
    assert "too long" in r.text

    silent = await FakeDevice(stack, "SINGLE000002", mode="silent").start()
    elsewhere = {**params, "url": "https://updates.example.com/fw/2.0.0.bin"}
    r = await stack.http.post(
        f"/api/devices/{silent.id}/commands", json={"command": "ota", "params": elsewhere}
    )
    assert r.status_code == 201, r.text
    assert r.json()["params"]["url"] == elsewhere["url"]
