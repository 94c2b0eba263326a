"""Signed firmware end to end: simulated devices running the real firmware, through the
real broker, worker and API. The devices are flashed with the key file of the platform's
key (`iotp firmware keygen`, `iotp firmware pubkey`). The broker is open on purpose: any
client may publish an `ota` command, which is the attack the signature stops; here the
commands go through the API (an operator, or someone who can publish commands, pointing
the device at bundles of their choice on their own HTTP server).

- a device installs only bundles signed with its install's key: unsigned, signed with
  another key, a tampered file, a tampered manifest and a downgrade are each refused with
  an error ack naming the reason, and the device keeps running its version;
- a rollout of a tampered bundle pauses at its failure threshold with the reason;
- a key rotation: a bundle signed with the old key carries the new one, the device trusts
  the new key from then on and refuses the old one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker

from iotp.db.models import FirmwareRow
from iotp.services import signing
from iotp.services.manifest import key_id, parse, public_bytes
from iotp.simulator import firmware
from iotp.simulator.bundle import build_firmware_bundle
from tests.simulator.fleet_support import file_server, running_fleet
from tests.support import OPEN, Stack, run_stack


def _flashed_with(key: Ed25519PrivateKey) -> bytes:
    return signing.device_key_file(public_bytes(key.public_key()))


async def _ota(stack: Stack, device: str, url: str, data: bytes, version: str, **extra: Any) -> Any:
    """Sends an ota command through the API and returns the command once it ended."""
    params = {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "version": version, **extra}
    r = await stack.http.post(
        f"/api/devices/{device}/commands",
        json={"command": "ota", "params": params, "timeout": 60},
    )
    assert r.status_code in (201, 202), r.text
    cid = r.json()["id"]

    async def ended() -> Any:
        cmd = await stack.get(f"/api/commands/{cid}")
        return cmd if cmd["status"] in ("acked", "failed", "timed_out") else None

    return await stack.wait_for(ended, timeout=60)


async def _described(stack: Stack, count: int) -> None:
    async def probe() -> bool:
        body = await stack.get("/api/devices", limit=100)
        return sum(1 for d in body["data"] if "ota" in d["capabilities"]) == count

    await stack.wait_for(probe, timeout=20)


async def test_device_installs_only_bundles_signed_with_its_key(tmp_path: Path) -> None:
    key = signing.write_new_key(signing.current_path(tmp_path))
    stranger = Ed25519PrivateKey.generate()
    good = build_firmware_bundle("1.1.0", key=key)
    signed = parse(good)
    # the first file's first byte changed (a file every runtime installs: the bundle's
    # last bytes are a .mpy variant this CPython device skips), manifest and signature
    # intact
    at = len(good) - len(signed.body)
    tampered_file = good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :]
    # the manifest says another version, the signature is the original one
    tampered_manifest = good.replace(b'"version":"1.1.0"', b'"version":"1.1.9"', 1)
    assert tampered_manifest != good
    # each is refused as the device installs, at the boot after the download: it reboots
    # into the same version
    attacks = {
        "unsigned": (build_firmware_bundle("1.1.0"), "1.1.0", "unsigned bundle refused"),
        "stranger": (
            build_firmware_bundle("1.1.0", key=stranger),
            "1.1.0",
            f"bundle signed with key {key_id(public_bytes(stranger.public_key()))} refused: "
            f"this device trusts key {signed.key_id}",
        ),
        "file": (tampered_file, "1.1.0", "does not match the manifest's SHA-256"),
        "manifest": (tampered_manifest, "1.1.9", "bad signature"),
    }
    async with (
        file_server() as (files, port),
        run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack,
        running_fleet(
            stack.mqtt_url,
            devices=1,
            seed=21,
            ota_key=_flashed_with(key),
            config={"ota_confirm_timeout": 15},
        ) as fleet,
    ):
        sim = fleet.devices[0]
        await _described(stack, 1)
        for name, (data, version, reason) in attacks.items():
            files[f"/{name}.bin"] = data
            boots = sim.boots
            cmd = await _ota(
                stack, sim.node_id, f"http://127.0.0.1:{port}/{name}.bin", data, version
            )
            assert cmd["status"] == "failed", (name, cmd)
            assert reason in cmd["error"], (name, cmd["error"])
            assert sim.boots == boots + 1, name
            assert sim.version == firmware.builtin_version(), name  # never switched
            assert "ota.tmp" not in sim.hal.files, name  # the staged bundle is gone
        # the genuine bundle installs
        files["/good.bin"] = good
        cmd = await _ota(stack, sim.node_id, f"http://127.0.0.1:{port}/good.bin", good, "1.1.0")
        assert cmd["status"] == "acked", cmd
        assert sim.version == "1.1.0"
        # a bundle signed with the right key, but older than what runs
        old = build_firmware_bundle("1.0.5", key=key)
        files["/old.bin"] = old
        url = f"http://127.0.0.1:{port}/old.bin"
        cmd = await _ota(stack, sim.node_id, url, old, "1.0.5")
        assert cmd["status"] == "failed"
        assert "downgrade from 1.1.0 to 1.0.5 refused" in cmd["error"]
        assert sim.version == "1.1.0"
        cmd = await _ota(stack, sim.node_id, url, old, "1.0.5", allow_downgrade=True)
        assert cmd["status"] == "acked", cmd
        assert sim.version == "1.0.5"

        async def reports(version: str) -> bool:
            dev = await stack.get(f"/api/devices/{sim.node_id}")
            return bool(dev["firmware_version"] == version)

        await stack.wait_for(lambda: reports("1.0.5"), timeout=15)


async def test_rollout_of_a_tampered_bundle_pauses_with_the_reason(tmp_path: Path) -> None:
    """The bundle store was tampered with after the upload (file and recorded hash both
    changed, as an attacker with the disk and the database would): the devices' signature
    check is what stops it."""
    key = signing.write_new_key(signing.current_path(tmp_path))
    async with (
        run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack,
        running_fleet(stack.mqtt_url, devices=4, seed=22, ota_key=_flashed_with(key)) as fleet,
    ):
        await _described(stack, 4)
        r = await stack.http.post(
            "/api/firmware",
            content=build_firmware_bundle("1.1.0"),
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        fw = r.json()
        assert fw["key_id"] == key_id(public_bytes(key.public_key()))
        [stored] = (tmp_path / "firmware").glob("*.bin")
        data = stored.read_bytes()
        evil = data.replace(b"# OTA bundle, the device's side", b"# OTA bundle, the DEVICE's side")
        assert evil != data
        stored.write_bytes(evil)
        sessions = async_sessionmaker(stack.worker.engine)
        async with sessions.begin() as session:
            await session.execute(
                update(FirmwareRow)
                .where(FirmwareRow.id == fw["id"])
                .values(sha256=hashlib.sha256(evil).hexdigest())
            )
        r = await stack.http.post(
            "/api/rollouts",
            json={
                "firmware_id": fw["id"],
                "selector": {"all": True},
                "rate_per_minute": 12,  # one device every 5 s: it pauses before the last
                "failure_threshold": 0.5,
            },
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]

        async def paused() -> Any:
            body = await stack.get(f"/api/rollouts/{rid}")
            return body if body["status"] == "paused" else None

        body = await stack.wait_for(paused, timeout=60)
        reason = "bad bundle: iotfw/bundle.py does not match the manifest's SHA-256"
        assert "failure threshold reached" in body["paused_reason"]
        assert reason in body["paused_reason"]
        failed = [d for d in body["devices"] if d["status"] == "failed"]
        assert len(failed) >= 2
        assert all(reason in d["error"] for d in failed)
        assert body["counts"]["pending"] >= 1  # paused before the whole fleet got it
        assert {sim.version for sim in fleet.devices} == {firmware.builtin_version()}


async def test_key_rotation(tmp_path: Path) -> None:
    """keygen --next: uploads signed with the current key carry the next one; devices
    that confirmed such a version trust only the next key; keygen --promote signs with it."""
    old = signing.write_new_key(signing.current_path(tmp_path))
    new = signing.write_new_key(signing.next_path(tmp_path))
    old_id = key_id(public_bytes(old.public_key()))
    new_id = key_id(public_bytes(new.public_key()))

    async with (
        run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack,
        running_fleet(stack.mqtt_url, devices=2, seed=23, ota_key=_flashed_with(old)) as fleet,
    ):
        await _described(stack, 2)

        async def roll_out(version: str) -> Any:
            r = await stack.http.post(
                "/api/firmware",
                content=build_firmware_bundle(version),
                headers={"content-type": "application/octet-stream"},
            )
            assert r.status_code == 201, r.text
            r = await stack.http.post(
                "/api/rollouts",
                json={
                    "firmware_id": r.json()["id"],
                    "selector": {"all": True},
                    "rate_per_minute": 6000,
                    "failure_threshold": 1,
                },
            )
            assert r.status_code == 201, r.text
            rid = r.json()["id"]

            async def done() -> Any:
                body = await stack.get(f"/api/rollouts/{rid}")
                return body if body["status"] in ("completed", "paused") else None

            return await stack.wait_for(done, timeout=60)

        first = await roll_out("1.1.0")
        assert first["counts"]["installed"] == 2, first
        assert first["key_id"] == old_id
        assert (await stack.get(f"/api/firmware/{first['firmware_id']}"))["next_key_id"] == new_id
        for sim in fleet.devices:
            assert sim.version == "1.1.0"
            flashed = json.loads(sim.hal.files["ota_key.json"])
            assert flashed["key"] == public_bytes(new.public_key()).hex()
        signing.promote(tmp_path)
        second = await roll_out("1.2.0")
        assert second["key_id"] == new_id
        assert second["counts"]["installed"] == 2, second
        # the old key is no longer trusted: a bundle it signs is refused
        signing.current_path(tmp_path).unlink()
        retired = tmp_path / "signing" / f"retired-{old_id}.pem"
        retired.replace(signing.current_path(tmp_path))
        third = await roll_out("1.3.0")
        assert third["counts"]["failed"] == 2, third
        refused = f"bundle signed with key {old_id} refused: this device trusts key {new_id}"
        assert all(refused in d["error"] for d in third["devices"]), third["devices"]
        assert all(sim.version == "1.2.0" for sim in fleet.devices)
