"""Firmware registry and tracked rollouts with fake devices (download, verify, switch)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from iotp.services import manifest, signing
from iotp.services.manifest import public_bytes
from tests.control_support import TEST_SIGNING_KEY, FakeDevice, small_bundle
from tests.support import Stack, login

BUNDLE = small_bundle("2.0.0")


async def _upload(stack: Stack, version: str, data: bytes = BUNDLE, **params: str) -> Any:
    return await stack.http.post(
        "/api/firmware",
        params={"version": version, **params},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )


async def test_firmware_registry(stack: Stack) -> None:
    r = await _upload(stack, "2.0.0", notes="faster sensors")
    assert r.status_code == 201, r.text
    fw = r.json()
    assert fw["sha256"] == hashlib.sha256(BUNDLE).hexdigest()
    assert fw["size"] == len(BUNDLE)
    assert fw["notes"] == "faster sensors"
    assert (await stack.get("/api/firmware"))["count"] == 1
    files = list((Path(stack.settings.data_dir) / "firmware").iterdir())
    assert len(files) == 1
    url = f"/api/firmware/{fw['id']}/download"
    full = await stack.http.get(url)
    assert full.content == BUNDLE
    assert full.headers["accept-ranges"] == "bytes"
    part = await stack.http.get(url, headers={"Range": "bytes=8-12"})
    assert part.status_code == 206
    assert part.content == BUNDLE[8:13]
    assert part.headers["content-range"] == f"bytes 8-12/{len(BUNDLE)}"
    tail = await stack.http.get(url, headers={"Range": f"bytes={len(BUNDLE) - 3}-"})
    assert tail.content == BUNDLE[-3:]
    bad = await stack.http.get(url, headers={"Range": f"bytes={len(BUNDLE) + 5}-"})
    assert bad.status_code == 416
    # bad input
    assert (await _upload(stack, "2.0.0")).status_code == 409  # same version again
    assert (await _upload(stack, "bad version!")).status_code == 422
    assert (await _upload(stack, "3.0.0", b"")).status_code == 422
    assert (await stack.http.post("/api/firmware", content=BUNDLE)).status_code == 409
    assert (await stack.http.get("/api/firmware/999")).status_code == 404
    assert (await stack.http.get("/api/firmware/999/download")).status_code == 404
    assert (await stack.http.get("/api/firmware/abc")).status_code == 422
    r = await stack.http.delete(f"/api/firmware/{fw['id']}")
    assert r.status_code == 204
    assert not list((Path(stack.settings.data_dir) / "firmware").iterdir())
    assert (await stack.http.delete(f"/api/firmware/{fw['id']}")).status_code == 404


async def _firmware_is(stack: Stack, device_id: str, version: str) -> bool:
    return bool((await stack.get(f"/api/devices/{device_id}"))["firmware_version"] == version)


async def _rollout_done(stack: Stack, rid: int, *statuses: str) -> Any:
    async def probe() -> Any:
        r = await stack.get(f"/api/rollouts/{rid}")
        return r if r["status"] in statuses else None

    return await stack.wait_for(probe, timeout=30)


async def test_rollout_installs_skips_and_reports_rollback(stack: Stack) -> None:
    fleet = [await FakeDevice(stack, f"OTA00000000{i}").start() for i in range(4)]
    fleet[1].ota_fail = "rollback"
    current = await FakeDevice(stack, "OTA000000009", firmware="2.0.0").start()
    fw = (await _upload(stack, "2.0.0")).json()
    ids = [d.id for d in [*fleet, current]]
    r = await stack.http.post(
        "/api/rollouts",
        json={
            "firmware_id": fw["id"],
            "selector": {"devices": ids},
            "rate_per_minute": 6000,
            "failure_threshold": 0.5,
        },
    )
    assert r.status_code == 201, r.text
    rollout = r.json()
    assert rollout["counts"]["skipped"] == 1
    assert rollout["counts"]["pending"] == 4
    done = await _rollout_done(stack, rollout["id"], "completed")
    by_dev = {d["device_id"]: d for d in done["devices"]}
    assert by_dev[current.id]["status"] == "skipped"
    assert by_dev[fleet[1].id]["status"] == "rolled_back"
    for d in (fleet[0], fleet[2], fleet[3]):
        assert by_dev[d.id]["status"] == "installed"
        assert by_dev[d.id]["from_version"] == "1.0.0"
        await stack.wait_for(lambda d=d: _firmware_is(stack, d.id, "2.0.0"))
    # The rollout follows the device's progress reports; the command's final ack is
    # recorded on its own path and may come a moment later.
    cid = by_dev[fleet[0].id]["command_id"]

    async def acked() -> dict[str, Any] | None:
        cmd: dict[str, Any] = await stack.get(f"/api/commands/{cid}")
        return cmd if cmd["status"] == "acked" else None

    cmd = await stack.wait_for(acked)
    assert cmd["params"]["sha256"] == fw["sha256"]
    # firmware in use by no active rollout can be deleted
    assert (await stack.http.delete(f"/api/firmware/{fw['id']}")).status_code == 204


@pytest.mark.slow
async def test_rollout_50_devices_pauses_on_failure_threshold(stack: Stack) -> None:
    """50 devices, a corrupted bundle on disk: every device fails 'sha256 mismatch';
    the rollout pauses at the threshold, resume counts new failures, cancel stops it."""
    fleet = [await FakeDevice(stack, f"FLEET{i:07d}").start() for i in range(50)]
    fw = (await _upload(stack, "2.0.0")).json()
    for path in (Path(stack.settings.data_dir) / "firmware").iterdir():
        path.write_bytes(BUNDLE.replace(b"print", b"PRINT"))  # corrupted at rest
    r = await stack.http.post(
        "/api/rollouts",
        json={
            "firmware_id": fw["id"],
            "selector": {"all": True},
            "rate_per_minute": 600,
            "failure_threshold": 0.1,
        },
    )
    rid = r.json()["id"]
    paused = await _rollout_done(stack, rid, "paused")
    assert "failure threshold" in paused["paused_reason"]
    failed = [d for d in paused["devices"] if d["status"] == "failed"]
    assert len(failed) >= 5
    assert all(d["error"] == "sha256 mismatch" for d in failed)
    started = sum(1 for d in fleet if d.received)
    assert started < 50  # paused before the whole fleet got it
    # bad steering input
    assert (await stack.http.post(f"/api/rollouts/{rid}/pause")).status_code == 409
    assert (await stack.http.post("/api/rollouts/999/pause")).status_code == 404
    assert (await stack.http.delete(f"/api/firmware/{fw['id']}")).status_code == 409
    r = await stack.http.post(f"/api/rollouts/{rid}/resume")
    assert r.status_code == 200
    assert r.json()["status"] == "running"
    await _rollout_done(stack, rid, "paused")
    r = await stack.http.post(f"/api/rollouts/{rid}/cancel")
    assert r.json()["status"] == "cancelled"
    assert r.json()["counts"]["cancelled"] > 0
    assert (await stack.http.post(f"/api/rollouts/{rid}/resume")).status_code == 409


async def test_rollout_bad_input(stack: Stack) -> None:
    dev = await FakeDevice(stack, "OTABAD000001", caps=["relay:light"]).start()
    fw = (await _upload(stack, "2.0.0")).json()
    base = {"firmware_id": fw["id"], "selector": {"devices": [dev.id]}}
    cases = [
        ({**base, "firmware_id": 999}, 404, "firmware"),
        ({**base, "selector": {}}, 422, "selector"),
        ({**base, "selector": {"devices": ["GHOST"]}}, 422, "GHOST"),
        (base, 422, "ota"),  # device lacks the capability
        ({**base, "rate_per_minute": 0}, 422, "rate_per_minute"),
        ({**base, "failure_threshold": 2}, 422, "failure_threshold"),
        ({**base, "timeout": 1}, 422, "timeout"),
        ({**base, "base_url": "ftp://x"}, 422, "base_url"),
        ({**base, "surprise": True}, 422, "surprise"),
    ]
    for body, code, reason in cases:
        r = await stack.http.post("/api/rollouts", json=body)
        assert r.status_code == code, (body, r.text)
        assert reason in r.text, (body, r.text)
    assert (await stack.http.get("/api/rollouts/999")).status_code == 404
    assert (await stack.get("/api/rollouts"))["count"] == 0


async def test_upload_signs_checks_and_records_the_key(stack: Stack) -> None:
    """Unsigned uploads are signed with the server's key once it has one; pre-signed
    ones keep their signature; broken bundles are refused with the reason."""
    data_dir = Path(stack.settings.data_dir)
    offline = (await _upload(stack, "3.0.0", small_bundle("3.0.0"))).json()
    assert offline["key_id"] == manifest.key_id(public_bytes(TEST_SIGNING_KEY.public_key()))
    unsigned = (await _upload(stack, "3.0.1", small_bundle("3.0.1", key=None))).json()
    assert unsigned["key_id"] is None
    server = signing.write_new_key(signing.current_path(data_dir))
    server_id = manifest.key_id(public_bytes(server.public_key()))
    signed = (await _upload(stack, "3.0.2", small_bundle("3.0.2", key=None))).json()
    assert signed["key_id"] == server_id
    assert signed["next_key_id"] is None
    stored = await stack.http.get(signed["download_path"])
    assert manifest.parse(stored.content).key_id == server_id
    assert hashlib.sha256(stored.content).hexdigest() == signed["sha256"]
    # a rotation: the next key rides along in every bundle signed from now on
    nxt = signing.write_new_key(signing.next_path(data_dir))
    rotating = (await _upload(stack, "3.0.3", small_bundle("3.0.3", key=None))).json()
    assert rotating["key_id"] == server_id
    assert rotating["next_key_id"] == manifest.key_id(public_bytes(nxt.public_key()))
    # pre-signed with another key: kept as it is
    assert (await _upload(stack, "3.0.4", small_bundle("3.0.4"))).json()["key_id"] == offline[
        "key_id"
    ]
    good = small_bundle("4.0.0")
    cases = [
        (small_bundle("4.0.0"), {"version": "4.0.1"}, "not '4.0.1'"),
        (good[:-1] + b"X", {}, "main.py does not match"),
        (good.replace(b'"4.0.0"', b'"4.0.9"'), {}, "bad signature"),
        (b"IOTPFW1 4\nF main.py 5\nprint\nE\n", {}, "unsupported bundle format"),
        (b"garbage", {}, "not a firmware bundle"),
    ]
    for data, params, reason in cases:
        r = await stack.http.post(
            "/api/firmware",
            params=params,
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 422, r.text
        assert reason in r.text, r.text


async def test_unsigned_rollout_needs_an_admin_saying_so(stack: Stack) -> None:
    dev = await FakeDevice(stack, "UNSIGNED0001").start()
    fw = (await _upload(stack, "5.0.0", small_bundle("5.0.0", key=None))).json()
    body = {"firmware_id": fw["id"], "selector": {"devices": [dev.id]}}
    r = await stack.http.post("/api/rollouts", json=body)
    assert r.status_code == 422
    assert "unsigned" in r.text
    assert "allow_unsigned" in r.text
    r = await stack.http.post(
        "/api/users", json={"username": "otto", "password": "operator-pw-1", "role": "operator"}
    )
    assert r.status_code == 201, r.text
    operator = await login(stack.http, "otto", "operator-pw-1")
    r = await stack.http.post(
        "/api/rollouts",
        json={**body, "allow_unsigned": True},
        headers={"Authorization": f"Bearer {operator}"},
    )
    assert r.status_code == 403
    assert "admin" in r.text
    r = await stack.http.post("/api/rollouts", json={**body, "allow_unsigned": True})
    assert r.status_code == 201, r.text
    assert r.json()["allow_unsigned"] is True
    assert r.json()["key_id"] is None
