"""Foreign firmware through the real broker: a Tasmota, a Zigbee2MQTT bridge with two
devices and a Shelly Gen2, replayed from their documented payloads
(tests/adapter_payloads.py), appear, stream, go offline and online and take a command,
on both stacks. Devices authenticate: provisioned (secure mode), each foreign client with
the account an admin gave it through the API. The attacks on the ACLs are at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import adapter_payloads as fx
from tests.control_support import command_status, device_status
from tests.support import (
    AMQTT_KIND,
    PROVISIONED,
    SUPERVISED_STACKS,
    MqttTestClient,
    Stack,
    run_stack,
)

pytestmark = [pytest.mark.mosquitto]

Reply = Callable[[str, bytes], list[tuple[str, bytes]]]


@pytest.fixture(params=SUPERVISED_STACKS)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with run_stack(request.param, tmp_path, mode=PROVISIONED) as s:
        yield s


async def account(stack: Stack, mapping: str, username: str, scope: str | None) -> str:
    response = await stack.http.post(
        f"/api/adapters/{mapping}/accounts", json={"username": username, "scope": scope}
    )
    assert response.status_code == 201, response.text
    password: str = response.json()["password"]
    return password


async def client(stack: Stack, username: str, password: str) -> MqttTestClient:
    found: MqttTestClient | None = None

    async def up() -> bool:
        nonlocal found
        try:
            found = await stack.device(username, credentials=(username, password))
        except Exception:  # refused until the broker has reloaded its accounts
            return False
        return True

    await stack.wait_for(up, timeout=15, interval=0.2)
    assert found is not None
    return found


class Firmware:
    """Answers the platform's commands as the firmware does (``reply``); records them."""

    def __init__(self, stack: Stack, mqtt: MqttTestClient, reply: Reply) -> None:
        self.mqtt = mqtt
        self.reply = reply
        self.received: list[tuple[str, bytes]] = []
        self._task = asyncio.create_task(self._run())
        stack.cleanup.append(self.stop)

    async def _run(self) -> None:
        while True:
            topic, payload = await self.mqtt.messages.get()
            self.received.append((topic, payload))
            for out_topic, body in self.reply(topic, payload):
                self.mqtt.publish(out_topic, body)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def tasmota_reply(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    relay = topic.rsplit("/", 1)[1]
    return [fx.tasmota_result(relay, payload.decode())]


def z2m_reply(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    name = topic[len("zigbee2mqtt/") : -len("/set")]
    return [fx.z2m_state(name, orjson.loads(payload)["state"])]


def shelly_reply(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    request = orjson.loads(payload)
    return [fx.shelly_response(request, {"was_on": False})]


async def latest(stack: Stack, device_id: str, metric: str) -> Any:
    response = await stack.http.get(f"/api/devices/{device_id}/latest")
    if response.status_code != 200:
        return None
    return (response.json().get("metrics") or {}).get(metric, {}).get("value")


async def wait_metric(stack: Stack, device_id: str, metric: str, value: float) -> None:
    async def probe() -> bool:
        return await latest(stack, device_id, metric) == value

    await stack.wait_for(probe, timeout=15)


async def relay_command(stack: Stack, device_id: str, name: str, state: str) -> dict[str, Any]:
    response = await stack.http.post(
        f"/api/devices/{device_id}/commands",
        json={"command": "relay", "params": {"name": name, "state": state}},
    )
    assert response.status_code in (200, 201, 202), response.text
    return await command_status(stack, response.json()["id"], "acked", "failed", "timed_out")


async def test_tasmota_zigbee2mqtt_and_shelly_appear_stream_and_take_commands(
    stack: Stack,
) -> None:
    # Accounts from an admin: the Tasmota's topic, the bridge's base topic, the Shelly's id.
    tasmota = await client(
        stack,
        "tasmota-kitchen",
        await account(stack, "tasmota", "tasmota-kitchen", fx.TASMOTA_TOPIC),
    )
    bridge = await client(
        stack, "z2m-bridge", await account(stack, "zigbee2mqtt", "z2m-bridge", None)
    )
    shelly = await client(stack, fx.SHELLY, await account(stack, "shelly", fx.SHELLY, fx.SHELLY))
    await tasmota.subscribe(f"cmnd/{fx.TASMOTA_TOPIC}/#")
    await bridge.subscribe("zigbee2mqtt/+/set")
    await shelly.subscribe(f"{fx.SHELLY}/rpc")
    Firmware(stack, tasmota, tasmota_reply)
    Firmware(stack, bridge, z2m_reply)
    Firmware(stack, shelly, shelly_reply)

    # Appear (retained births, as the firmware sends them) and stream.
    tasmota.publish(*fx.TASMOTA_LWT_ONLINE, retain=True)
    tasmota.publish(*fx.TASMOTA_INFO1)
    tasmota.publish(*fx.TASMOTA_STATE)
    tasmota.publish(*fx.TASMOTA_SENSOR)
    bridge.publish(*fx.Z2M_BRIDGE_DEVICES, retain=True)
    bridge.publish(*fx.Z2M_SENSOR_READING)
    bridge.publish(*fx.Z2M_PLUG_STATE)
    bridge.publish(*fx.z2m_availability(fx.Z2M_PLUG, "online"), retain=True)
    shelly.publish(*fx.SHELLY_ONLINE, retain=True)
    shelly.publish(*fx.SHELLY_WIFI)
    shelly.publish(*fx.SHELLY_SWITCH)

    await wait_metric(stack, fx.TASMOTA_ID, "AM2301.Temperature", 22.4)
    await wait_metric(stack, fx.Z2M_SENSOR_ID, "temperature", 21.72)
    await wait_metric(stack, fx.SHELLY_ID, "switch_0.voltage", 229.8)
    for device_id in (fx.TASMOTA_ID, fx.Z2M_PLUG_ID, fx.SHELLY_ID):
        await device_status(stack, device_id, "online")
    device = (await stack.http.get(f"/api/devices/{fx.TASMOTA_ID}")).json()
    assert device["type"] == "tasmota"
    assert device["firmware_version"] == "13.1.0(tasmota)"
    assert {"relay:POWER1", "relay:POWER2"} <= set(device["capabilities"])
    plug = (await stack.http.get(f"/api/devices/{fx.Z2M_PLUG_ID}")).json()
    assert plug["type"] == "zigbee2mqtt"
    assert "relay:state" in plug["capabilities"]
    sensor = (await stack.http.get(f"/api/devices/{fx.Z2M_SENSOR_ID}")).json()
    assert sensor["name"] == fx.Z2M_SENSOR  # registered from the bridge's device list

    # Commands through the broker, acknowledged by what the firmware reports.
    done = await relay_command(stack, fx.TASMOTA_ID, "POWER1", "on")
    assert done["status"] == "acked", done
    done = await relay_command(stack, fx.Z2M_PLUG_ID, "state", "on")
    assert done["status"] == "acked", done
    done = await relay_command(stack, fx.SHELLY_ID, "switch_0", "on")
    assert done["status"] == "acked", done
    assert done["result"] == {"was_on": False}
    # OTA does not apply, and the API says why.
    response = await stack.http.post(
        f"/api/devices/{fx.TASMOTA_ID}/commands",
        json={
            "command": "ota",
            "params": {"url": "http://x/y", "sha256": "0" * 64, "version": "2"},
        },
    )
    assert response.status_code == 422
    assert "OTA does not apply" in response.text

    # Offline and online again.
    tasmota.publish(*fx.TASMOTA_LWT_OFFLINE, retain=True)
    bridge.publish(*fx.z2m_availability(fx.Z2M_PLUG, "offline"), retain=True)
    shelly.publish(*fx.SHELLY_OFFLINE, retain=True)
    for device_id in (fx.TASMOTA_ID, fx.Z2M_PLUG_ID, fx.SHELLY_ID):
        await device_status(stack, device_id, "offline")
    tasmota.publish(*fx.TASMOTA_LWT_ONLINE, retain=True)
    bridge.publish(*fx.z2m_availability(fx.Z2M_PLUG, "online"), retain=True)
    shelly.publish(*fx.SHELLY_ONLINE, retain=True)
    for device_id in (fx.TASMOTA_ID, fx.Z2M_PLUG_ID, fx.SHELLY_ID):
        await device_status(stack, device_id, "online")
    # Still streaming after coming back.
    shelly.publish(*fx.shelly_switch(True, 57.5))
    await wait_metric(stack, fx.SHELLY_ID, "switch_0.apower", 57.5)
    # The bridge goes (its last will): every device behind it goes offline with it.
    bridge.publish(*fx.Z2M_BRIDGE_OFFLINE, retain=True)
    for device_id in (fx.Z2M_SENSOR_ID, fx.Z2M_PLUG_ID):
        await device_status(stack, device_id, "offline")


@pytest.mark.parametrize(
    "kind", [pytest.param("embedded-sqlite", marks=pytest.mark.mosquitto), AMQTT_KIND]
)
async def test_foreign_accounts_stay_on_their_own_topics(tmp_path: Path, kind: str) -> None:
    """The attack: a second Tasmota's account (a device that was opened) tries to speak
    for the first, command it, read everything, speak the platform's own protocol, or get
    a scope that reaches other topics; the victim keeps streaming and taking commands."""
    async with run_stack(kind, tmp_path, mode=PROVISIONED) as stack:
        victim = await client(
            stack,
            "tasmota-kitchen",
            await account(stack, "tasmota", "tasmota-kitchen", fx.TASMOTA_TOPIC),
        )
        await victim.subscribe(f"cmnd/{fx.TASMOTA_TOPIC}/#")
        firmware = Firmware(stack, victim, tasmota_reply)
        victim.publish(*fx.TASMOTA_LWT_ONLINE, retain=True)
        victim.publish(*fx.TASMOTA_STATE)
        victim.publish(*fx.TASMOTA_SENSOR)
        await wait_metric(stack, fx.TASMOTA_ID, "AM2301.Temperature", 22.4)

        attacker = await client(
            stack, "tasmota-garage", await account(stack, "tasmota", "tasmota-garage", "garage")
        )
        # Mosquitto grants a forbidden subscription and delivers nothing; amqtt refuses it.
        for topic in ("#", f"cmnd/{fx.TASMOTA_TOPIC}/#"):
            with contextlib.suppress(AssertionError):
                await attacker.subscribe(topic)
        forged = orjson.dumps({"AM2301": {"Temperature": -99.0}})
        attacker.publish(f"tele/{fx.TASMOTA_TOPIC}/SENSOR", forged)
        attacker.publish(f"tele/{fx.TASMOTA_TOPIC}/LWT", b"Offline", retain=True)
        attacker.publish(f"cmnd/{fx.TASMOTA_TOPIC}/POWER1", b"OFF")
        attacker.publish(f"devices/{fx.TASMOTA_ID}/data", b'{"AM2301.Temperature": -99}')
        attacker.publish(f"devices/{fx.TASMOTA_ID}/commands", b'{"id": "x", "command": "reboot"}')
        attacker.publish("zigbee2mqtt/bridge/devices", b"[]")
        attacker.publish(f"{fx.SHELLY}/online", b"true")
        # Its own topic works: the attack is not a broken account.
        attacker.publish("tele/garage/SENSOR", orjson.dumps({"AM2301": {"Temperature": 5.0}}))
        await wait_metric(stack, "tasmota-garage", "AM2301.Temperature", 5.0)

        # The victim keeps streaming and takes a command; none of the forgeries landed.
        victim.publish(*fx.TASMOTA_SENSOR)
        done = await relay_command(stack, fx.TASMOTA_ID, "POWER1", "on")
        assert done["status"] == "acked", done
        assert await latest(stack, fx.TASMOTA_ID, "AM2301.Temperature") == 22.4
        assert (await stack.get(f"/api/devices/{fx.TASMOTA_ID}"))["status"] == "online"
        assert [t for t, p in firmware.received if p == b"OFF"] == []
        devices = {d["id"] for d in (await stack.get("/api/devices"))["data"]}
        assert fx.SHELLY_ID not in devices
        assert fx.Z2M_PLUG_ID not in devices
        seen = []
        while not attacker.messages.empty():
            seen.append(attacker.messages.get_nowait()[0])
        leaked = [t for t in seen if fx.TASMOTA_TOPIC in t]
        assert leaked == []

        # A scope can never reach another mapping's or the platform's topics.
        for mapping, scope in (
            ("shelly", "tele"),
            ("shelly", "devices"),
            ("shelly", "zigbee2mqtt"),
            ("tasmota", "+"),
        ):
            response = await stack.http.post(
                f"/api/adapters/{mapping}/accounts", json={"username": "intruder", "scope": scope}
            )
            assert response.status_code == 422, (scope, response.text)
        # Nor take a device's account over.
        await stack.http.post("/api/credentials/A4CF12B3C4D5")
        response = await stack.http.post(
            "/api/adapters/tasmota/accounts", json={"username": "A4CF12B3C4D5", "scope": "x"}
        )
        assert response.status_code == 422


async def test_mappings_at_run_time_and_the_dry_run(tmp_path: Path) -> None:
    """Open mode on purpose: the test is about the API and the worker taking a mapping up."""
    async with run_stack("embedded-sqlite", tmp_path, mode="open") as stack:
        listed = {a["name"]: a for a in (await stack.get("/api/adapters"))["data"]}
        assert {"tasmota", "zigbee2mqtt", "shelly"} <= set(listed)
        assert all(listed[n]["enabled"] for n in ("tasmota", "zigbee2mqtt", "shelly"))

        dry = await stack.http.post(
            "/api/adapters/dry-run",
            json={
                "mapping": "tasmota",
                "topic": fx.TASMOTA_SENSOR[0],
                "payload": orjson.loads(fx.TASMOTA_SENSOR[1]),
            },
        )
        assert dry.status_code == 200, dry.text
        body = dry.json()
        assert body["device_ids"] == [fx.TASMOTA_ID]
        assert body["rejected"] is None
        assert body["stored"][0]["metrics"]["ENERGY.Power"] == 42
        assert body["units"][fx.TASMOTA_ID]["ENERGY.Power"] == "W"
        bad = await stack.http.post(
            "/api/adapters/dry-run",
            json={"mapping": "tasmota", "topic": fx.TASMOTA_LWT_ONLINE[0], "payload": "Asleep"},
        )
        assert bad.json()["rejected"].startswith("bad_status")
        refused = await stack.http.put(
            "/api/adapters/sneaky",
            json={
                "name": "sneaky",
                "device_id": "x-{id}",
                "rules": [{"topic": "devices/{id}/data", "data": {"flatten": True}}],
            },
        )
        assert refused.status_code == 422

        mapping = {
            "name": "thermo",
            "device_id": "thermo-{room}",
            "interval": 5,
            "rules": [
                {
                    "topic": "home/{room}/climate",
                    "data": {"fields": {"temperature": {"path": "t", "unit": "°C"}}},
                }
            ],
        }
        assert (await stack.http.put("/api/adapters/thermo", json=mapping)).status_code == 200
        sensor = await stack.device()

        async def taken_up() -> bool:
            sensor.publish("home/attic/climate", b'{"t": 30.5}')
            return await latest(stack, "thermo-attic", "temperature") == 30.5

        await stack.wait_for(taken_up, timeout=15, interval=0.5)
        # Turned off at run time: its messages are no longer taken.
        assert (
            await stack.http.patch("/api/adapters/tasmota", json={"enabled": False})
        ).status_code == 200

        async def off() -> bool:  # the worker has taken it up (its next poll)
            return "tasmota" not in stack.worker.adapters.snapshot()["mappings"]

        await stack.wait_for(off)
        sensor.publish(*fx.TASMOTA_SENSOR)
        sensor.publish("home/attic/climate", b'{"t": 31.5}')
        await wait_metric(stack, "thermo-attic", "temperature", 31.5)
        assert (await stack.http.get(f"/api/devices/{fx.TASMOTA_ID}")).status_code == 404


def test_cli_accounts_list_and_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`iotp adapters ...` on a SQLite data dir (no broker needed)."""
    from typer.testing import CliRunner

    from iotp.cli import app
    from iotp.settings import get_settings

    monkeypatch.setenv("IOTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOTP_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("IOTP_ADAPTERS_SHELLY", "false")
    get_settings.cache_clear()
    try:
        run = CliRunner().invoke
        listed = run(app, ["adapters", "list"])
        assert listed.exit_code == 0, listed.output
        assert "on  tasmota" in listed.output
        assert "off shelly" in listed.output
        made = run(app, ["adapters", "account", "tasmota", "tasmota-hall", "--scope", "hall"])
        assert made.exit_code == 0, made.output
        assert "tele/hall/#" in made.output
        assert "cmnd/hall/#" in made.output
        refused = run(app, ["adapters", "account", "zigbee2mqtt", "bridge", "--scope", "x"])
        assert refused.exit_code == 1
        assert "takes no scope" in refused.output
        builtin = Path(__file__).parents[2] / "src/iotp/adapters/builtin/tasmota.yaml"
        dry = run(app, ["adapters", "dry-run", str(builtin), "tele/hall/LWT", "Offline"])
        assert dry.exit_code == 0, dry.output
        assert "devices/tasmota-hall/status offline" in dry.output
    finally:
        get_settings.cache_clear()


# ---- two workers sharing the load -----------------------------------------------------


@pytest.mark.parametrize("kind", SUPERVISED_STACKS)
async def test_a_worker_meeting_a_registered_device_keeps_what_was_stored_of_it(
    tmp_path: Path, kind: str
) -> None:
    """A worker meets a mapped device registered before with more than this message
    shows (another worker of the share group saw its relay; here the same worker, made
    to forget the device as it does after a restart). Its info keeps the stored relay
    and units instead of replacing them with what this one message says. Open mode on
    purpose: the test is about the workers, not who may connect."""
    async with run_stack(kind, tmp_path, mode="open") as stack:
        tasmota = await stack.device("tasmota-kitchen")
        for message in (fx.TASMOTA_LWT_ONLINE, fx.TASMOTA_INFO1, fx.TASMOTA_STATE):
            tasmota.publish(*message)
        tasmota.publish(*fx.TASMOTA_SENSOR)

        async def stored() -> dict[str, Any] | None:
            device = (await stack.http.get(f"/api/devices/{fx.TASMOTA_ID}")).json()
            caps = device.get("capabilities", [])
            has_relays = {"relay:POWER1", "relay:POWER2"} <= set(caps)
            return device if has_relays and device.get("units") else None

        before = await stack.wait_for(stored)
        worker = stack.worker
        worker.adapters.forget(fx.TASMOTA_ID)
        worker.ingestor.forget(fx.TASMOTA_ID)
        # A sensor report alone says nothing of the relays.
        done = worker.adapters.handle(*fx.TASMOTA_SENSOR)
        assert done is not None
        await done
        after = (await stack.http.get(f"/api/devices/{fx.TASMOTA_ID}")).json()
        assert set(before["capabilities"]) <= set(after["capabilities"]), after
        assert after["units"] == before["units"]
        # What it reports later still arrives, in order.
        tasmota.publish(*fx.TASMOTA_STATE)
        assert await stack.wait_for(stored)


@pytest.mark.parametrize("kind", SUPERVISED_STACKS)
async def test_two_workers_ack_commands_whichever_sees_the_firmwares_report(
    tmp_path: Path, kind: str
) -> None:
    """Two workers in one share group (open mode on purpose: the test is about the
    workers, not who may connect). A Tasmota and a Zigbee2MQTT plug ack by key (the
    RESULT names the relay, the plug's state message carries "state"): the worker that
    translated a command holds that expectation in memory, yet the report may reach the
    other one. Every command ends acked all the same."""
    async with run_stack(kind, tmp_path, mode="open", workers=2, mqtt_share_group="acks") as stack:
        workers = stack.workers
        tasmota = await stack.device("tasmota-kitchen")
        await tasmota.subscribe(f"cmnd/{fx.TASMOTA_TOPIC}/#")
        bridge = await stack.device("z2m-bridge")
        await bridge.subscribe("zigbee2mqtt/+/set")
        forced = True

        def forgetting(reply: Reply, device_id: str) -> Reply:
            def answer(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
                if forced:
                    # The command is out: whichever worker takes the report, it holds no
                    # expectation of it (as the one that did not translate the command).
                    for worker in workers:
                        binding = worker.adapters.engine.devices.get(device_id)
                        if binding is not None:
                            binding.pending.clear()
                return reply(topic, payload)

            return answer

        tasmota_fw = Firmware(stack, tasmota, forgetting(tasmota_reply, fx.TASMOTA_ID))
        bridge_fw = Firmware(stack, bridge, forgetting(z2m_reply, fx.Z2M_PLUG_ID))
        tasmota.publish(*fx.TASMOTA_LWT_ONLINE, retain=True)
        tasmota.publish(*fx.TASMOTA_INFO1)
        tasmota.publish(*fx.TASMOTA_STATE)
        bridge.publish(*fx.Z2M_BRIDGE_DEVICES, retain=True)
        bridge.publish(*fx.Z2M_PLUG_STATE)
        bridge.publish(*fx.z2m_availability(fx.Z2M_PLUG, "online"), retain=True)
        for device_id in (fx.TASMOTA_ID, fx.Z2M_PLUG_ID):
            await device_status(stack, device_id, "online")

        async def relays_known() -> bool:
            # Each worker's info says what that worker has seen of the plug: the bridge's
            # device list reaching one and the plug's state the other, the later info may
            # lack the relay until the plug's state has reached both.
            bridge.publish(*fx.Z2M_PLUG_STATE)
            plug = (await stack.http.get(f"/api/devices/{fx.Z2M_PLUG_ID}")).json()
            return "relay:state" in plug["capabilities"]

        await stack.wait_for(relays_known, interval=0.3)
        # Neither worker has met the devices since it started (as when the other one
        # registered them): the command's worker finds the mapping in the database.
        for worker in workers:
            for device_id in (fx.TASMOTA_ID, fx.Z2M_PLUG_ID):
                worker.adapters.forget(device_id)
                worker.ingestor.forget(device_id)

        forced_commands = [
            (fx.TASMOTA_ID, "POWER1", "on"),
            (fx.Z2M_PLUG_ID, "state", "on"),
            (fx.TASMOTA_ID, "POWER2", "off"),
            (fx.Z2M_PLUG_ID, "state", "off"),
            (fx.TASMOTA_ID, "POWER1", "off"),
        ]
        for device_id, name, state in forced_commands:
            done = await relay_command(stack, device_id, name, state)
            assert done["status"] == "acked", done
            assert done["result"] == {name: state.upper()}
        from_db = sum(w.adapters.counters["acks_from_database"] for w in workers)
        assert from_db == len(forced_commands)
        assert len(tasmota_fw.received) == 3
        assert len(bridge_fw.received) == 2

        # As it comes: the reports spread over both workers, each command acked.
        forced = False
        natural = [
            (fx.TASMOTA_ID, "POWER1", "on"),
            (fx.Z2M_PLUG_ID, "state", "on"),
            (fx.TASMOTA_ID, "POWER2", "on"),
            (fx.TASMOTA_ID, "POWER1", "off"),
            (fx.Z2M_PLUG_ID, "state", "off"),
            (fx.TASMOTA_ID, "POWER2", "off"),
        ] * 2
        for device_id, name, state in natural:
            done = await relay_command(stack, device_id, name, state)
            assert done["status"] == "acked", done
        for worker in workers:
            assert worker.control.counters["acks_unknown"] == 0
        statuses: list[str] = []
        for device_id in (fx.TASMOTA_ID, fx.Z2M_PLUG_ID):
            rows = (await stack.get(f"/api/devices/{device_id}/commands"))["data"]
            statuses.extend(c["status"] for c in rows)
        assert len(statuses) == len(forced_commands) + len(natural)
        assert set(statuses) == {"acked"}
