"""The firmware as real MicroPython processes (the unix port, built with ROMFS, with
the heap the suite needs: TEST_HEAP, an ESP32's equivalent; firmware/README.md,
"Heap") against the real platform: Mosquitto + PostgreSQL, worker and API. One
stack and one device are shared by the tests of this module, in order: registration
and data, every command with its ack, on-device automation, presence with the last
will, OTA (signature checked on the device, the heap watched while it downloads;
switch, then rollback of a firmware that does not start), a packet over the device's
limit.

Devices authenticate in open mode on purpose: provisioning and TLS are in
test_fw_mpy_secure.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotp.services.manifest import BundleFile, build, public_bytes
from iotp.services.signing import device_key_file
from iotp.simulator import firmware
from iotp.simulator.bundle import build_firmware_bundle
from iotp.simulator.mpy import FILES_HEAP_BYTES, MicroPythonFleet, MpyDevice
from tests.control_support import TEST_SIGNING_KEY
from tests.firmware.fwlink import Commander, fw, next_message
from tests.firmware.mpy_support import heap_free, mpy_fleet, need_micropython, until
from tests.support import OPEN, MqttTestClient, Stack, run_stack

OTA_KEY = device_key_file(public_bytes(TEST_SIGNING_KEY.public_key()))

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]


class Platform:
    def __init__(self, stack: Stack, fleet: MicroPythonFleet, observer: MqttTestClient) -> None:
        self.stack = stack
        self.fleet = fleet
        self.sim: MpyDevice = fleet.devices[0]
        self.observer = observer
        self.cmd = Commander(observer, self.sim.node_id)
        self.files: dict[str, bytes] = {}
        self.file_port = 0


async def _file_server(files: dict[str, bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = files.get(head.decode().split(" ")[1])
        if body is None:
            writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 4096):  # paced, so the heap is seen mid-download
                writer.write(body[i : i + 4096])
                await writer.drain()
                await asyncio.sleep(0.01)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    need_micropython()
    tmp: Path = tmp_path_factory.mktemp("mpy-platform")
    async with run_stack("mosquitto-postgres", tmp, mode=OPEN) as stack:
        observer = await MqttTestClient(stack.mqtt_url).connect()
        await observer.subscribe("devices/#")
        config = {"ota_confirm_timeout": 15, "automation": {"light_auto": False}}
        async with mpy_fleet(stack.mqtt_url, config=config, ota_key=OTA_KEY) as fleet:
            p = Platform(stack, fleet, observer)
            server = await _file_server(p.files)
            p.file_port = server.sockets[0].getsockname()[1]
            try:
                yield p
            finally:
                server.close()
                await observer.close()


async def test_registers_streams_and_has_heap_to_spare(platform: Platform) -> None:
    p = platform
    node = p.sim.node_id

    async def stored() -> Any:
        r = await p.stack.http.get(f"/api/devices/{node}/latest")
        return r.status_code == 200 and "temperature" in json.dumps(r.json()) and r.json()

    await p.stack.wait_for(stored, timeout=20)
    device = await p.stack.get(f"/api/devices/{node}")
    assert device["firmware_version"] == "1.0.0"
    assert device["status"] == "online"
    info = json.loads(await next_message(p.observer, p.cmd.topic("info")))
    assert info["capabilities"]
    # the firmware's heap after boot keeps the margin the device checks its health by
    await p.sim.send("mem")
    await until(p.sim, lambda: p.sim.mem, what="heap figures")
    assert heap_free(p.sim) >= fw("device").MIN_FREE_MEM


async def test_every_command_is_acked(platform: Platform) -> None:
    p = platform
    cmd = p.cmd
    # through the platform: the API waits for the device's own ack
    r = await p.stack.http.post(
        f"/api/devices/{p.sim.node_id}/commands",
        params={"wait": "true"},
        json={"command": "relay", "params": {"name": "light", "state": True}},
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "acked", r.json()
    assert r.json()["result"] == {"name": "light", "state": True}
    # and each built-in straight over MQTT
    assert (await cmd.send("servo", {"angle": 45}))["result"] == {"angle": 45}
    ping = await cmd.send("ping")
    assert ping["status"] == "ok" and ping["result"]["free_mem"] > 0
    ack = await cmd.send("set_config", {"interval": 2})
    assert ack == {"id": ack["id"], "status": "ok", "result": {"interval": 2}}
    ack = await cmd.send("automation", {"fan_temp_on": 35.0, "fan_temp_off": 33.0})
    assert ack["status"] == "ok" and ack["result"]["fan_temp_on"] == 35.0
    ack = await cmd.send("webhook", {"url": "", "events": []})
    assert ack["status"] == "ok"
    ack = await cmd.send("nope")
    assert ack["status"] == "error" and "unknown command" in ack["error"]
    ack = await cmd.send("servo", {"angle": "wide"})
    assert ack["status"] == "error"
    # a command just under the largest packet the device takes in (4 KB) is read
    # whole from its receive buffer
    ack = await cmd.send("ping", {"pad": "x" * 3900})
    assert ack["status"] in ("ok", "error") and ack["id"]
    p.observer.publish(cmd.topic("commands"), b"{not json", qos=1)
    bad = await next_message(p.observer, cmd.topic("ack"), match=lambda b: b"malformed" in b)
    assert json.loads(bad)["status"] == "error"
    boots = p.sim.boots
    assert (await cmd.send("reboot", {"delay": 0}))["status"] == "ok"
    await until(p.sim, lambda: p.sim.boots == boots + 1 and p.sim.connected, what="rebooted")
    assert p.sim.exits[-1] == 75  # a reset, not a crash of the interpreter
    # the settings stored on flash survived the reboot: the state the device retains
    # after it (read by a new subscriber) carries them
    fresh = await MqttTestClient(p.stack.mqtt_url).connect()
    try:
        await fresh.subscribe(cmd.topic("state"))
        state = json.loads(
            await next_message(fresh, cmd.topic("state"), match=lambda b: b'"interval": 2' in b)
        )
        assert state["automation"]["fan_temp_on"] == 35.0
    finally:
        await fresh.close()


async def test_gas_leak_forces_the_fan_on_device(platform: Platform) -> None:
    p = platform
    cmd = p.cmd
    await p.sim.send("leak")  # a leak in the device's room
    event = json.loads(
        await next_message(
            p.observer, cmd.topic("events"), timeout=30, match=lambda b: b"gas_alarm" in b
        )
    )
    assert event["event"] == "gas_alarm"
    state = json.loads(
        await next_message(
            p.observer, cmd.topic("state"), match=lambda b: b'"gas_alarm": true' in b
        )
    )
    assert state["relays"]["fan"] is True
    ack = await cmd.send("relay", {"name": "fan", "state": False})
    assert ack["status"] == "error"  # no manual "fan off" during the alarm


async def test_power_cut_sends_the_last_will(platform: Platform) -> None:
    p = platform
    node = p.sim.node_id
    boots = p.sim.boots
    await p.sim.send("crash")
    await next_message(
        p.observer, p.cmd.topic("status"), timeout=10, match=lambda b: b == b"offline"
    )

    async def offline() -> bool:
        return (await p.stack.get(f"/api/devices/{node}"))["status"] == "offline"

    await p.stack.wait_for(offline, timeout=10)
    await until(p.sim, lambda: p.sim.boots == boots + 1 and p.sim.connected, what="back")
    await next_message(
        p.observer, p.cmd.topic("status"), timeout=10, match=lambda b: b == b"online"
    )


def _broken_bundle(version: str) -> bytes:
    """A signed build whose device module does not import: the device cannot start it."""
    files: list[BundleFile] = []
    root = firmware.firmware_dir() / "iotfw"
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        if path.name == "__init__.py":
            data = data.replace(b'VERSION = "1.0.0"', f'VERSION = "{version}"'.encode())
        if path.name == "device.py":
            data = b'raise ImportError("a broken build")\n'
        files.append(BundleFile(f"iotfw/{path.name}", data))
    return build(version, files).sign(TEST_SIGNING_KEY).to_bytes()


async def _ota(p: Platform, name: str, data: bytes, version: str) -> dict[str, Any]:
    p.files[f"/{name}"] = data
    return await p.cmd.send(
        "ota",
        {
            "url": f"http://127.0.0.1:{p.file_port}/{name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "version": version,
            "size": len(data),
        },
        timeout=60,
    )


async def test_ota_switches_and_rolls_back_a_firmware_that_does_not_start(
    platform: Platform,
) -> None:
    p = platform
    cmd = p.cmd
    good = build_firmware_bundle("1.1.0", key=TEST_SIGNING_KEY)
    # refused before anything is installed: a wrong hash, no signature, another key
    ack = await _ota(p, "unsigned.bin", build_firmware_bundle("1.1.0"), "1.1.0")
    assert ack["status"] == "error"
    assert "unsigned bundle refused" in ack["error"]
    other = build_firmware_bundle("1.1.0", key=Ed25519PrivateKey.generate())
    ack = await _ota(p, "other.bin", other, "1.1.0")
    assert ack["status"] == "error"
    assert "refused: this device trusts key" in ack["error"]
    p.files["/fw-1.1.0.bin"] = good
    ack = await cmd.send(
        "ota",
        {
            "url": f"http://127.0.0.1:{p.file_port}/fw-1.1.0.bin",
            "sha256": "0" * 64,
            "version": "1.1.0",
        },
        timeout=30,
    )
    assert ack["error"] == "sha256 mismatch"
    boots = p.sim.boots
    seen = len(p.sim.mem)
    ack = await _ota(p, "fw-1.1.0.bin", good, "1.1.0")
    assert ack["status"] == "ok", (ack, "\n".join(p.sim.lines[-30:]))
    assert ack["result"] == {"version": "1.1.0"}
    # one boot installs it, the next runs it (on a heap the installer did not cut up)
    assert p.sim.boots == boots + 2
    # the heap while it downloaded (len(good) bytes, streamed to flash a chunk at a
    # time): it never ran short, and it did not fill up as the bundle came in
    downloading = [
        heap_free(p.sim, line) for line in p.sim.mem[seen:] if line.startswith("mem ota downloading")
    ]
    assert len(downloading) >= 5, p.sim.mem[seen:]
    assert min(downloading) >= fw("device").MIN_FREE_MEM
    # (the first figure is the update's start, the second the first chunk's)
    assert downloading[-1] >= downloading[1] - 1024, downloading

    async def reported() -> bool:
        # the ack and the new info go out together; the worker stores info in a batch
        device = await p.stack.get(f"/api/devices/{p.sim.node_id}")
        return bool(device["firmware_version"] == "1.1.0")

    await p.stack.wait_for(reported, timeout=10)
    # the device packed the new slot's image, and runs from it: the heap after boot is
    # what it was from the factory image (from the slot's files it would be a third
    # less)
    state = json.loads((p.sim.flash / "ota.json").read_text())
    assert (p.sim.flash / state["active"] / "iotfw.rom").is_file()
    boot_lines = [line for line in p.sim.mem if line.startswith("mem boot")]
    assert heap_free(p.sim, boot_lines[-1]) >= heap_free(p.sim, boot_lines[0]) - 2048, boot_lines
    await p.sim.send("mem")
    await until(p.sim, lambda: len(p.sim.mem) >= 2, what="heap after the update")

    ack = await _ota(p, "fw-1.2.0.bin", _broken_bundle("1.2.0"), "1.2.0")
    assert ack == {"id": ack["id"], "status": "error", "error": "rolled_back"}, ack
    assert any("a broken build" in line for line in p.sim.lines)
    info = json.loads(
        await next_message(p.observer, cmd.topic("info"), match=lambda b: b'"1.1.0"' in b)
    )
    assert info["firmware"] == "1.1.0"

    # an image that does not mount: the same firmware runs, from its slot's files (with
    # the heap a build without ROMFS needs for them)
    state = json.loads((p.sim.flash / "ota.json").read_text())
    image = p.sim.flash / state["active"] / "iotfw.rom"
    good_image = image.read_bytes()
    image.write_bytes(b"not an image")
    heap, p.fleet.heap = p.fleet.heap, FILES_HEAP_BYTES
    try:
        boots = p.sim.boots
        assert (await cmd.send("reboot", {"delay": 0}))["status"] == "ok"
        await until(p.sim, lambda: p.sim.boots == boots + 1 and p.sim.connected, what="rebooted")
        assert any("image did not mount" in line for line in p.sim.lines)
        info = json.loads(
            await next_message(p.observer, cmd.topic("info"), match=lambda b: b'"1.1.0"' in b)
        )
        assert info["firmware"] == "1.1.0"
    finally:
        image.write_bytes(good_image)
        p.fleet.heap = heap
    boots = p.sim.boots
    assert (await cmd.send("reboot", {"delay": 0}))["status"] == "ok"
    await until(p.sim, lambda: p.sim.boots == boots + 1 and p.sim.connected, what="rebooted")


async def test_a_packet_over_the_limit_is_refused_and_the_link_starts_again(
    platform: Platform,
) -> None:
    """After the refusal and the reconnection (clean session, the command
    subscription made again) commands are delivered and acknowledged."""
    p = platform
    node = p.sim.node_id
    boots = p.sim.boots
    refused = sum(1 for line in p.sim.lines if "packet of" in line)
    big = {"id": "too-big", "command": "ping", "params": {"pad": "x" * 6000}}
    p.observer.publish(p.cmd.topic("commands"), json.dumps(big), qos=1)
    await until(
        p.sim,
        lambda: sum(1 for line in p.sim.lines if "packet of" in line) > refused,
        what="the packet refused",
    )
    after = datetime.now(UTC)

    async def streaming_again() -> bool:
        seen = (await p.stack.get(f"/api/devices/{node}"))["last_seen"]
        return seen is not None and datetime.fromisoformat(seen) > after + timedelta(seconds=1)

    await p.stack.wait_for(streaming_again, timeout=20, interval=0.5)
    assert p.sim.boots == boots  # the same process: it reconnected, it did not reset
    # commands reach it again: from the client that sent the oversized one, from a
    # fresh client, and through the platform (which waits for the device's ack)
    ack = await p.cmd.send("ping", timeout=15)
    assert ack["status"] == "ok", ack
    fresh = await MqttTestClient(p.stack.mqtt_url).connect()
    try:
        await fresh.subscribe(p.cmd.topic("ack"))
        ack = await Commander(fresh, node).send("ping", timeout=15)
        assert ack["status"] == "ok", ack
    finally:
        await fresh.close()
    r = await p.stack.http.post(
        f"/api/devices/{node}/commands",
        params={"wait": "true"},
        json={"command": "servo", "params": {"angle": 30}},
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "acked", r.json()
    assert r.json()["result"] == {"angle": 30}


async def test_a_build_without_romfs_runs_the_firmware_from_its_files(
    platform: Platform,
) -> None:
    """The stock MicroPython build (no ROMFS): the same firmware loads from files into
    the heap, so it needs more of it (FILES_HEAP_BYTES), registers and acks commands."""
    p = platform
    async with mpy_fleet(
        p.stack.mqtt_url, romfs=False, heap=FILES_HEAP_BYTES, id_prefix="FILES"
    ) as fleet:
        sim = fleet.devices[0]
        assert not (sim.flash / "iotfw.rom").exists()
        await p.observer.subscribe(f"devices/{sim.node_id}/#")
        ack = await Commander(p.observer, sim.node_id).send("ping", timeout=15)
        assert ack["status"] == "ok", ack
        # from files the modules take the heap the image keeps for the device
        rom_boot = next(line for line in p.sim.mem if line.startswith("mem boot"))
        files_boot = next(line for line in sim.mem if line.startswith("mem boot"))
        taken_rom = p.fleet.heap - heap_free(p.sim, rom_boot)
        taken_files = FILES_HEAP_BYTES - heap_free(sim, files_boot)
        assert taken_files > taken_rom + 20_000, (taken_rom, taken_files)
