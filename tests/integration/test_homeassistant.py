"""Home Assistant discovery, both ways, through the real broker.

- Our devices announced to Home Assistant: a simulated device (the real firmware) on a
  provisioned stack (secure mode: the device logs in with credentials an admin issued;
  Home Assistant with its own broker account and ACL).
- A device announcing itself by Home Assistant discovery: open mode on purpose for what it
  becomes on the platform; provisioned (the account an admin issued for its node id) for
  the attack by a second such device's account."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from iotp.homeassistant import abbreviations
from iotp.simulator import Fleet
from tests.integration.test_adapters import client
from tests.support import (
    AMQTT_KIND,
    OPEN,
    PROVISIONED,
    SUPERVISED_KINDS,
    MqttTestClient,
    Stack,
    login,
    run_stack,
)
from tests.unit.test_homeassistant_discovery import check_config

pytestmark = pytest.mark.mosquitto
KIND = "embedded-sqlite"  # the supervised Mosquitto, as `iotp serve` runs it


class Retained:
    """What a Home Assistant client sees under a topic filter, latest per topic."""

    def __init__(self, client: MqttTestClient) -> None:
        self.client = client
        self.latest: dict[str, bytes] = {}
        self.history: list[tuple[str, bytes]] = []

    async def until(self, probe: Any, timeout: float = 20.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = probe(self)
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"not seen in {timeout}s; latest: {sorted(self.latest)}")
            with contextlib.suppress(TimeoutError):
                topic, payload = await asyncio.wait_for(self.client.messages.get(), remaining)
                self.latest[topic] = payload
                self.history.append((topic, payload))


@contextlib.asynccontextmanager
async def simulated(stack: Stack, node: str, secret: str) -> AsyncIterator[Fleet]:
    fleet = Fleet(
        devices=1,
        broker_url=stack.mqtt_url,
        interval=0.5,
        seed=21,
        gas_events_per_hour=0,
        credentials={node: secret},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop=stop))
    try:
        yield fleet
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def our_configs(seen: Retained, node: str) -> dict[str, dict[str, Any]]:
    return {
        t: orjson.loads(p)
        for t, p in seen.latest.items()
        if t.endswith("/config") and f"/{node}/" in t and p
    }


@pytest.mark.parametrize("kind", [*SUPERVISED_KINDS, AMQTT_KIND])
async def test_our_device_in_home_assistant_and_its_commands(tmp_path: Path, kind: str) -> None:
    async with run_stack(kind, tmp_path, mode=PROVISIONED, homeassistant_discovery=True) as stack:
        node = Fleet(devices=1, broker_url=stack.mqtt_url, seed=21).devices[0].node_id
        issued = (await stack.http.post(f"/api/credentials/{node}")).json()
        ha_login = ("homeassistant", stack.settings.homeassistant_mqtt_password())
        # The broker reads the new accounts every credentials_poll_seconds.
        ha = await stack.wait_for(lambda: _connect(stack, ha_login), timeout=15, interval=0.2)
        stack.cleanup.append(ha.close)
        await ha.subscribe("homeassistant/#")
        await ha.subscribe(f"iotp-ha/{node}/availability")
        await ha.subscribe(f"devices/{node}/state")
        seen = Retained(ha)
        async with simulated(stack, node, issued["password"]):
            expected = {
                f"homeassistant/{c}/{node}/{o}/config"
                for c, o in [
                    ("sensor", "temperature"),
                    ("sensor", "humidity"),
                    ("sensor", "gas"),
                    ("switch", "relay_light"),
                    ("switch", "relay_fan"),
                    ("number", "servo"),
                    ("button", "reboot"),
                ]
            }
            configs = await seen.until(
                lambda s: (c := our_configs(s, node)) and expected <= set(c) and c
            )
            for topic in expected:  # each as the documentation requires
                check_config(topic, configs[topic])
            await seen.until(lambda s: s.latest.get(f"iotp-ha/{node}/availability") == b"online")
            light = abbreviations.expand(configs[f"homeassistant/switch/{node}/relay_light/config"])

            # Home Assistant switches the light: a command of ours, sent, acked, kept.
            ha.publish(light["command_topic"], "ON")
            command = await stack.wait_for(lambda: _command(stack, node, "relay", "acked"))
            assert command["source"] == "homeassistant"
            assert command["params"] == {"name": "light", "state": "on"}
            assert command["result"] == {"name": "light", "state": True}
            await seen.until(
                lambda s: (
                    orjson.loads(s.latest.get(f"devices/{node}/state", b"{}"))
                    .get("relays", {})
                    .get("light")
                    is True
                )
            )
            ha.publish(f"iotp-ha/{node}/servo/set", "120")
            servo = await stack.wait_for(lambda: _command(stack, node, "servo", "acked"))
            assert servo["result"] == {"angle": 120}

            # Bad input from Home Assistant: counted and logged, no command.
            bridge = stack.worker.homeassistant
            assert bridge is not None
            before = bridge.counters["rejected_command"]
            ha.publish(light["command_topic"], "DIM")
            ha.publish(f"iotp-ha/{node}/servo/set", "999")  # the command's own range check
            ha.publish("iotp-ha/NOSUCHDEVICE/servo/set", "10")
            await stack.wait_for(lambda: _counter(bridge, "rejected_command", before + 3))
            history = (await stack.get(f"/api/devices/{node}/commands"))["data"]
            assert len(history) == 2

            # The attack: Home Assistant's account writing the device's command topic
            # directly, or posing as the device. The broker drops both.
            ha.publish(
                f"devices/{node}/commands",
                orjson.dumps({"id": "forged", "command": "relay", "params": {}}),
            )
            ha.publish(f"devices/{node}/data", orjson.dumps({"temperature": -99}))
            ha.publish(f"homeassistant/switch/{node}/relay_light/config", b"")
            ha.publish(light["command_topic"], "OFF")  # a marker after the forged ones
            await stack.wait_for(lambda: _command(stack, node, "relay", "acked", count=2))
            latest = await stack.get(f"/api/devices/{node}/latest")
            assert latest["metrics"]["temperature"]["value"] != -99
            # the device never saw the forged command (it would have answered its id)
            assert stack.worker.control.counters["acks_unknown"] == 0
            assert seen.latest[f"homeassistant/switch/{node}/relay_light/config"] != b""
            assert stack.worker.ingestor.counters.stored > 0  # ingest kept counting

            # Renamed: every config names the device anew.
            r = await stack.http.patch(f"/api/devices/{node}", json={"name": "Greenhouse"})
            assert r.status_code == 200, r.text
            await seen.until(
                lambda s: (
                    all(c["dev"]["name"] == "Greenhouse" for c in our_configs(s, node).values())
                    and expected <= set(our_configs(s, node))
                )
            )
        # Deleted (after the device stopped, or it would register again): every config
        # is cleared with an empty retained payload.
        await stack.wait_for(lambda: _status(stack, node, "offline"), timeout=20)
        await seen.until(lambda s: s.latest.get(f"iotp-ha/{node}/availability") == b"offline")
        r = await stack.http.delete(f"/api/devices/{node}")
        assert r.status_code == 204
        await seen.until(lambda s: all(s.latest.get(t) == b"" for t in expected))
        late = await MqttTestClient(stack.mqtt_url, "ha-late", credentials=ha_login).connect()
        stack.cleanup.append(late.close)
        await late.subscribe(f"homeassistant/+/{node}/+/config")
        # Retained messages come right after the SUBACK, before what is published next
        # on this connection: a marker of its own ends them.
        await late.subscribe("homeassistant/status")
        late.publish("homeassistant/status", "marker")
        arrived = await _until_marker(late)
        # Nothing retained is left, and nothing beyond its own subscriptions arrives
        # (every broker: amqtt once handed out other clients' retained topics).
        assert arrived == []


async def _until_marker(client: MqttTestClient) -> list[str]:
    """Topics received before the marker."""
    topics = []
    while True:
        topic, payload = await asyncio.wait_for(client.messages.get(), 10)
        if topic == "homeassistant/status" and payload == b"marker":
            return topics
        topics.append(topic)


async def _connect(stack: Stack, login: tuple[str, str]) -> MqttTestClient | None:
    client = MqttTestClient(stack.mqtt_url, "home-assistant", credentials=login)
    try:
        return await client.connect()
    except Exception:
        await client.close()
        return None


async def _command(
    stack: Stack, node: str, command: str, status: str, count: int = 1
) -> dict[str, Any] | None:
    rows = (await stack.get(f"/api/devices/{node}/commands", source="homeassistant"))["data"]
    done = [c for c in rows if c["command"] == command and c["status"] == status]
    return done[0] if len(done) >= count else None


async def _counter(bridge: Any, name: str, value: int) -> bool:
    return bool(bridge.counters[name] >= value)


async def _status(stack: Stack, node: str, status: str) -> bool:
    r = await stack.http.get(f"/api/devices/{node}")
    return r.status_code == 200 and r.json()["status"] == status


# ---- a device that announces itself ---------------------------------------------------

PLUG = "kitchenplug"


def plug_configs() -> dict[str, dict[str, Any]]:
    """What an ESPHome-style plug announces (abbreviated, with a base topic)."""
    device = {"ids": ["esp-a1b2c3"], "name": "Kitchen plug", "mdl": "plug-v2", "sw": "2024.6.1"}
    common = {"avty_t": f"{PLUG}/status", "dev": device}
    return {
        f"homeassistant/sensor/{PLUG}/power/config": {
            "name": "Power",
            "uniq_id": f"{PLUG}_power",
            "stat_t": f"{PLUG}/sensor/power/state",
            "unit_of_meas": "W",
            "dev_cla": "power",
            **common,
        },
        f"homeassistant/sensor/{PLUG}/env/config": {
            "name": "Temperature",
            "uniq_id": f"{PLUG}_env",
            "stat_t": f"{PLUG}/sensor/env",
            "val_tpl": "{{ value_json.temperature }}",
            **common,
        },
        f"homeassistant/switch/{PLUG}/relay/config": {
            "~": f"{PLUG}/switch/relay",
            "name": "Relay",
            "uniq_id": f"{PLUG}_relay",
            "cmd_t": "~/command",
            "stat_t": "~/state",
            **common,
        },
        f"homeassistant/button/{PLUG}/restart/config": {
            "name": "Restart",
            "uniq_id": f"{PLUG}_restart",
            "cmd_t": f"{PLUG}/button/restart/command",
            "dev_cla": "restart",
            **common,
        },
    }


async def test_a_device_announcing_itself_appears_and_takes_commands(tmp_path: Path) -> None:
    async with run_stack(KIND, tmp_path, mode=OPEN, homeassistant_discovery=True) as stack:
        plug = await stack.device(PLUG)
        await plug.subscribe(f"{PLUG}/+/+/command")
        plug.publish(f"{PLUG}/status", "online", retain=True)
        for topic, config in plug_configs().items():
            plug.publish(topic, orjson.dumps(config), retain=True)
        plug.publish(f"{PLUG}/switch/relay/state", "OFF", retain=True)
        # an unusable config on the way: counted, the rest goes on
        plug.publish(f"homeassistant/light/{PLUG}/lamp/config", b'{"cmd_t": "x"}', retain=True)
        # Tasmota announces itself to Home Assistant as well: its topics are the Tasmota
        # adapter's, so its device is the adapter's and not registered a second time.
        tasmota = {"name": "Power", "stat_t": "tele/plug7/STATE", "cmd_t": "cmnd/plug7/POWER"}
        plug.publish("homeassistant/switch/plug7/power/config", orjson.dumps(tasmota))

        async def registered() -> dict[str, Any] | None:
            r = await stack.http.get(f"/api/devices/{PLUG}")
            body: dict[str, Any] = r.json()
            caps = {"power", "env", "relay:relay", "cmd:restart"}
            return body if r.status_code == 200 and set(body["capabilities"]) == caps else None

        device = await stack.wait_for(registered, timeout=15)
        assert device["name"] == "Kitchen plug"
        assert device["type"] == "homeassistant"
        assert device["firmware_version"] == "2024.6.1"
        await stack.wait_for(lambda: _status(stack, PLUG, "online"))

        # readings on its state topics become metrics
        plug.publish(f"{PLUG}/sensor/power/state", "12.5")
        plug.publish(f"{PLUG}/sensor/env", orjson.dumps({"temperature": 21.25}))

        async def readings() -> bool:
            metrics = (await stack.get(f"/api/devices/{PLUG}/latest"))["metrics"]
            return metrics.get("power", {}).get("value") == 12.5 and (
                metrics.get("env", {}).get("value") == 21.25
            )

        await stack.wait_for(readings)

        # a platform command reaches it on its own command topic and is acknowledged
        r = await stack.http.post(
            f"/api/devices/{PLUG}/commands?wait=true",
            json={"command": "relay", "params": {"name": "relay", "state": "on"}},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "acked"
        assert r.json()["result"] == {"name": "relay", "state": True}
        topic, payload = await asyncio.wait_for(plug.messages.get(), 10)
        assert (topic, payload) == (f"{PLUG}/switch/relay/command", b"ON")
        r = await stack.http.post(
            f"/api/devices/{PLUG}/commands?wait=true",
            json={"command": "custom", "params": {"name": "restart"}},
        )
        assert r.json()["status"] == "acked", r.text
        topic, payload = await asyncio.wait_for(plug.messages.get(), 10)
        assert (topic, payload) == (f"{PLUG}/button/restart/command", b"PRESS")

        # its switch state, as the device reports it, is the relay's reported state
        plug.publish(f"{PLUG}/switch/relay/state", "ON", retain=True)

        async def relay_on() -> bool:
            state = (await stack.get(f"/api/devices/{PLUG}")).get("reported_state") or {}
            return bool(state.get("relays", {}).get("relay") is True)

        await stack.wait_for(relay_on)
        bridge = stack.worker.homeassistant
        assert bridge is not None
        assert bridge.counters["rejected_config"] >= 1
        assert bridge.counters["left_to_adapter"] == 1
        assert "plug7" not in bridge.foreign
        assert (await stack.http.get("/api/devices/plug7")).status_code == 404

        # its availability is its presence
        plug.publish(f"{PLUG}/status", "offline", retain=True)
        await stack.wait_for(lambda: _status(stack, PLUG, "offline"))
        # the platform announces nothing for it: it announces itself
        assert not [t for t in bridge._ours if t == PLUG]


async def discovery_account(stack: Stack, node: str, state: str, command: str) -> Any:
    return await stack.http.post(
        "/api/adapters/homeassistant/accounts",
        json={"node": node, "state_root": state, "command_root": command},
    )


async def _metric(stack: Stack, node: str, name: str) -> Any:
    r = await stack.http.get(f"/api/devices/{node}/latest")
    return r.json()["metrics"].get(name, {}).get("value") if r.status_code == 200 else None


@pytest.mark.parametrize("kind", [KIND, AMQTT_KIND])
async def test_a_device_announcing_itself_in_secure_mode(tmp_path: Path, kind: str) -> None:
    """PROVISIONED: the plug logs in with the account an admin issued for its node id;
    the attacker is a second discovery device with an account of its own, which tries
    to announce over the plug, forge its state and presence, read its commands, and
    point its own entities at the plug's topics. The plug keeps streaming and takes a
    command."""
    async with run_stack(kind, tmp_path, mode=PROVISIONED, homeassistant_discovery=True) as stack:
        r = await discovery_account(stack, PLUG, PLUG, PLUG)
        assert r.status_code == 201, r.text
        assert r.json()["write"] == [f"homeassistant/+/{PLUG}/+/config", f"{PLUG}/#"]
        assert r.json()["read"] == [f"{PLUG}/#"]
        plug = await client(stack, PLUG, r.json()["password"])
        await plug.subscribe(f"{PLUG}/+/+/command")
        plug.publish(f"{PLUG}/status", "online", retain=True)
        for topic, config in plug_configs().items():
            plug.publish(topic, orjson.dumps(config), retain=True)
        plug.publish(f"{PLUG}/switch/relay/state", "OFF", retain=True)
        caps = {"power", "env", "relay:relay", "cmd:restart"}

        async def registered() -> bool:
            r = await stack.http.get(f"/api/devices/{PLUG}")
            return r.status_code == 200 and set(r.json()["capabilities"]) == caps

        await stack.wait_for(registered, timeout=15)
        await stack.wait_for(lambda: _status(stack, PLUG, "online"))
        plug.publish(f"{PLUG}/sensor/power/state", "12.5")
        await stack.wait_for(lambda: _metric(stack, PLUG, "power"))

        r = await discovery_account(stack, "garageplug", "garage", "garage")
        assert r.status_code == 201, r.text
        attacker = await client(stack, "garageplug", r.json()["password"])
        # Mosquitto grants a forbidden subscription and delivers nothing; amqtt refuses it.
        for topic in ("#", f"{PLUG}/#", "homeassistant/#", "devices/+/commands"):
            with contextlib.suppress(AssertionError):
                await attacker.subscribe(topic)
        evil = {"name": "Power", "stat_t": "garage/power", "dev": {"name": "Evil", "ids": [PLUG]}}
        attacker.publish(f"homeassistant/sensor/{PLUG}/power/config", orjson.dumps(evil))
        attacker.publish("homeassistant/sensor/evilpower/config", orjson.dumps(evil))  # no node
        attacker.publish(f"homeassistant/sensor/{PLUG}/power/config", b"", retain=True)
        attacker.publish(f"{PLUG}/sensor/power/state", "-99")
        attacker.publish(f"{PLUG}/status", "offline", retain=True)
        attacker.publish(f"devices/{PLUG}/data", b'{"power": -99}')
        attacker.publish(f"devices/{PLUG}/commands", b'{"id": "x", "command": "relay"}')
        # Its own entities, one of them pointed at the plug's command topic: the platform
        # would switch the plug whenever the attacker's relay is commanded.
        own = {"name": "T", "stat_t": "garage/temp", "dev": {"name": "Garage"}}
        hijack = {"name": "R", "cmd_t": f"{PLUG}/switch/relay/command", "dev": {"name": "Garage"}}
        attacker.publish("homeassistant/sensor/garageplug/temp/config", orjson.dumps(own))
        attacker.publish("homeassistant/switch/garageplug/relay/config", orjson.dumps(hijack))
        attacker.publish("garage/temp", "5.0")  # its own topic works: not a broken account

        async def own_reading() -> bool:
            attacker.publish("garage/temp", "5.0")
            return await _metric(stack, "garageplug", "temp") == 5.0

        await stack.wait_for(own_reading, timeout=15, interval=0.5)
        bridge = stack.worker.homeassistant
        assert bridge is not None
        await stack.wait_for(lambda: _counter(bridge, "rejected_config", 1))
        garage = (await stack.get("/api/devices/garageplug"))["capabilities"]
        assert garage == ["temp"]  # the hijacking switch was refused
        r = await stack.http.post(
            "/api/devices/garageplug/commands?wait=true",
            json={"command": "relay", "params": {"name": "relay", "state": "on"}},
        )
        assert r.status_code >= 400 or r.json()["status"] != "acked", r.text

        # The plug keeps streaming and takes a command; none of the forgeries landed.
        plug.publish(f"{PLUG}/sensor/power/state", "13.5")
        await stack.wait_for(lambda: _until_metric(stack, PLUG, "power", 13.5))
        r = await stack.http.post(
            f"/api/devices/{PLUG}/commands?wait=true",
            json={"command": "relay", "params": {"name": "relay", "state": "on"}},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "acked"
        received = []
        while not plug.messages.empty():
            received.append(plug.messages.get_nowait())
        assert received == [(f"{PLUG}/switch/relay/command", b"ON")]
        device = await stack.get(f"/api/devices/{PLUG}")
        assert device["name"] == "Kitchen plug"
        assert set(device["capabilities"]) == caps
        assert device["status"] == "online"
        series = (await stack.get(f"/api/devices/{PLUG}/telemetry", metric="power"))["series"]
        assert [p["value"] for p in series["power"]] == [12.5, 13.5]
        assert "evilpower" not in bridge.foreign
        seen = []
        while not attacker.messages.empty():
            seen.append(attacker.messages.get_nowait()[0])
        assert [t for t in seen if PLUG in t or t.startswith("devices/")] == []

        # Accounts never reach the platform's, Home Assistant's, an adapter's or another
        # account's topics, nor a device of the platform's own; admins only.
        for node, state, command in (
            ("x1", "devices", "x1"),
            ("x1", "x1", "homeassistant"),
            ("x1", "iotp-ha/x1", "x1"),
            ("x1", "tele/x1", "x1"),
            ("x1", "$SYS", "x1"),
            ("x1", "x1/+", "x1"),
            ("x1", PLUG, "x1"),
            ("x1", "x1", f"{PLUG}/switch"),
            ("provision", "x1", "x1"),
        ):
            r = await discovery_account(stack, node, state, command)
            assert r.status_code == 422, (node, state, command, r.text)
        await stack.http.post("/api/credentials/A4CF12B3C4D5")
        r = await discovery_account(stack, "A4CF12B3C4D5", "x2", "x2")
        assert r.status_code == 422
        user = {"username": "olga", "password": "operator-pw-21", "role": "operator"}
        assert (await stack.http.post("/api/users", json=user)).status_code == 201
        token = await login(stack.http, "olga", "operator-pw-21")
        r = await stack.http.post(
            "/api/adapters/homeassistant/accounts",
            json={"node": "x3", "state_root": "x3", "command_root": "x3"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 403


async def _until_metric(stack: Stack, node: str, name: str, value: float) -> bool:
    return bool(await _metric(stack, node, name) == value)


# ---- two workers sharing the load -----------------------------------------------------


async def test_two_workers_make_each_command_once(tmp_path: Path) -> None:
    """Two workers in one share group (open mode on purpose: this is about the workers,
    not who may connect): each Home Assistant command becomes one platform command, and
    the two bridges agree on the retained configs instead of publishing them in turn."""
    from tests.control_support import FakeDevice

    async with run_stack(
        KIND, tmp_path, mode=OPEN, workers=2, homeassistant_discovery=True, mqtt_share_group="ha"
    ) as stack:
        second = stack.workers[1]
        bridges = [stack.worker.homeassistant, second.homeassistant]
        assert bridges[0] is not None
        assert bridges[1] is not None
        dev = await FakeDevice(stack, "HA2W00000001", caps=["temperature", "relay:light"]).start()
        ha = await stack.device("home-assistant")
        await ha.subscribe(f"homeassistant/+/{dev.id}/+/config")
        seen = Retained(ha)
        await seen.until(lambda s: len(our_configs(s, dev.id)) == 2)
        # All at once, before the service account exists: each worker creates it (or
        # finds the other's) and none of the commands is lost to that race.
        commands = 6
        for n in range(commands):
            ha.publish(f"iotp-ha/{dev.id}/relay_light/set", "ON" if n % 2 == 0 else "OFF")

        async def all_acked() -> bool:
            rows = (await stack.get(f"/api/devices/{dev.id}/commands", source="homeassistant"))[
                "data"
            ]
            return len([c for c in rows if c["status"] == "acked"]) >= commands

        await stack.wait_for(all_acked, timeout=20)
        made = [b.counters["commands"] for b in bridges if b is not None]
        assert sum(made) == commands
        assert len(dev.received) == commands
        # Each worker published the two configs once, and maybe once more on seeing the
        # other's (same bytes): never back and forth.
        for bridge in bridges:
            assert bridge is not None
            assert bridge.counters["configs_published"] <= 4


async def test_the_service_account_does_not_stop_the_first_admin(tmp_path: Path) -> None:
    """A worker may create Home Assistant's service account before the API's first start:
    the admin is still created then (no broker involved: database only)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from iotp.db import migrate
    from iotp.db.engine import make_engine
    from iotp.services import users
    from iotp.services.auth import Role

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'iotp.db'}")
    try:
        await migrate.upgrade(engine)
        async with AsyncSession(engine) as session:
            await users.create(
                session, username=users.HOMEASSISTANT_USER, password="x" * 32, role=Role.OPERATOR
            )
            await session.commit()
            generated = await users.ensure_admin(session, password="")
            assert generated  # created now, password shown once
            assert await users.get_by_name(session, users.ADMIN_USERNAME) is not None
            assert await users.ensure_admin(session, password="") is None  # once only
    finally:
        await engine.dispose()


def test_cli_discovery_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`iotp homeassistant account` on a SQLite data dir (no broker needed)."""
    from typer.testing import CliRunner

    from iotp.cli import app
    from iotp.settings import get_settings

    monkeypatch.setenv("IOTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOTP_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    try:
        run = CliRunner().invoke
        args = ["homeassistant", "account", "hallplug", "--state-root", "hall", "--command-root"]
        made = run(app, [*args, "hall/cmd"])
        assert made.exit_code == 0, made.output
        assert "homeassistant/+/hallplug/+/config, hall/#" in made.output
        assert "reads:     hall/cmd/#" in made.output
        other = ["account", "other", "--state-root", "hall/x", "--command-root", "other"]
        refused = run(app, ["homeassistant", *other])
        assert refused.exit_code == 1
        assert "already has" in refused.output
    finally:
        get_settings.cache_clear()
