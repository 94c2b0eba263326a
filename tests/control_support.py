"""Test helpers for device control: a scriptable fake device (speaks docs/protocol.md
over a real MQTT connection) and small waits on commands."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import gmqtt
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotp.services.manifest import BundleFile, build
from tests.support import MqttTestClient, Stack

# An offline signing key of the tests (fixed, so failures reproduce).
TEST_SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def small_bundle(version: str, *, key: Ed25519PrivateKey | None = TEST_SIGNING_KEY) -> bytes:
    """A one-file bundle (main.py = print), signed with key (None: unsigned)."""
    bundle = build(version, [BundleFile("main.py", b"print")])
    return (bundle if key is None else bundle.sign(key)).to_bytes()


CAPS = ["temperature", "relay:light", "relay:fan", "servo", "reboot", "ota", "automation"]


class FakeDevice:
    """mode: 'ack' (execute and ack ok), 'silent' (never ack), 'error' (ack an error).
    OTA: downloads the bundle over HTTP, checks the SHA-256, 'reboots' into the new
    version (reconnects with a new info) and acks ok; ``ota_fail`` = 'rollback' acks
    error rolled_back instead."""

    def __init__(
        self,
        stack: Stack,
        device_id: str,
        *,
        caps: list[str] | None = None,
        firmware: str = "1.0.0",
        mode: str = "ack",
        ota_fail: str | None = None,
        http: httpx.AsyncClient | None = None,
        secret: str | None = None,
    ) -> None:
        """``secret``: the device's MQTT password (a provisioned stack); none in open mode."""
        self.stack = stack
        self.secret = secret
        self.id = device_id
        self.caps = CAPS if caps is None else caps
        self.firmware = firmware
        self.mode = mode
        self.ota_fail = ota_fail
        self.http = http or stack.http
        self.received: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {
            "relays": {"light": False, "fan": False},
            "servo": 0,
            "automation": {"fan_temp_on": 28.0, "fan_temp_off": 26.0},
            "config": {"interval": 2},
        }
        self.client: MqttTestClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.on_command: Callable[[dict[str, Any]], Any] | None = None
        self._background: set[asyncio.Task[None]] = set()
        stack.cleanup.append(self.stop)

    def topic(self, leaf: str) -> str:
        return f"devices/{self.id}/{leaf}"

    def info(self) -> bytes:
        return orjson.dumps(
            {
                "protocol": 1,
                "type": "esp32-env",
                "firmware": self.firmware,
                "capabilities": self.caps,
                # No telemetry is sent: a long report interval keeps the platform's
                # last-seen timeout (3 missed reports) from calling it offline mid-test.
                "interval": 3600,
            }
        )

    async def start(self, *, wait_online: bool = True) -> FakeDevice:
        will = gmqtt.Message(self.topic("status"), b"offline", qos=1, retain=True)
        credentials = (self.id, self.secret) if self.secret is not None else None
        self.client = await MqttTestClient(
            self.stack.mqtt_url, self.id, will=will, credentials=credentials
        ).connect()
        await self.client.subscribe(self.topic("commands"), qos=1)
        self.client.publish(self.topic("info"), self.info(), retain=True)
        self.client.publish(self.topic("status"), b"online", retain=True)
        self.publish_state()
        self._task = asyncio.create_task(self._loop())
        if wait_online:
            await self.wait_registered()
        return self

    async def wait_registered(self) -> None:
        async def ready() -> bool:
            r = await self.stack.http.get(f"/api/devices/{self.id}")
            if r.status_code != 200:
                return False
            d = r.json()
            return bool(
                d["status"] == "online"
                and d["capabilities"] == self.caps
                and d["firmware_version"] == self.firmware
            )

        await self.stack.wait_for(ready)

    def publish_state(self) -> None:
        assert self.client is not None
        self.client.publish(self.topic("state"), orjson.dumps(self.state), retain=True)

    def ack(
        self, cid: str | None, status: str, result: Any = None, error: str | None = None
    ) -> None:
        assert self.client is not None
        body: dict[str, Any] = {"id": cid, "status": status}
        if result is not None:
            body["result"] = result
        if error is not None:
            body["error"] = error
        self.client.publish(self.topic("ack"), orjson.dumps(body))

    async def _loop(self) -> None:
        assert self.client is not None
        while True:
            topic, payload = await self.client.messages.get()
            if topic != self.topic("commands"):
                continue
            cmd = orjson.loads(payload)
            self.received.append(cmd)
            if self.on_command is not None:
                self.on_command(cmd)
            if self.mode == "silent":
                continue
            if self.mode == "error":
                self.ack(cmd["id"], "error", error="simulated failure")
                continue
            try:
                result = await self._execute(cmd)
            except Exception as exc:
                self.ack(cmd["id"], "error", error=str(exc))
                continue
            if result is not None:
                self.ack(cmd["id"], "ok", result)

    async def _execute(self, cmd: dict[str, Any]) -> Any:
        name, params = cmd["command"], cmd.get("params") or {}
        if name == "relay":
            want = params["state"]
            cur = self.state["relays"][params["name"]]
            self.state["relays"][params["name"]] = (not cur) if want == "toggle" else want == "on"
            self.publish_state()
            return {"name": params["name"], "state": self.state["relays"][params["name"]]}
        if name == "servo":
            self.state["servo"] = params["angle"]
            self.publish_state()
            return {"angle": params["angle"]}
        if name == "automation":
            self.state["automation"].update(params)
            self.publish_state()
            return dict(self.state["automation"])
        if name == "set_config":
            self.state["config"].update(params)
            self.publish_state()
            return params
        if name == "ota":
            task = asyncio.create_task(self._ota(cmd["id"], params))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return None
        return {}

    async def _ota(self, cid: str, params: dict[str, Any]) -> None:
        self.ack(cid, "progress", {"stage": "downloading", "percent": 0})
        response = await self.http.get(params["url"])
        if response.status_code != 200:
            self.ack(cid, "error", error=f"download failed: HTTP {response.status_code}")
            return
        if hashlib.sha256(response.content).hexdigest() != params["sha256"]:
            self.ack(cid, "error", error="sha256 mismatch")
            return
        self.ack(cid, "progress", {"stage": "installing", "percent": 100})
        if self.ota_fail == "rollback":
            self.ack(cid, "error", error="rolled_back")
            return
        await self.reboot(params["version"])
        self.ack(cid, "ok", {"version": params["version"]})

    async def reboot(self, version: str | None = None) -> None:
        await self.stop(clean=True)
        if version is not None:
            self.firmware = version
        await self.start(wait_online=False)

    async def stop(self, *, clean: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client is not None:
            client, self.client = self.client, None
            # Let QoS 1 acks in flight be acknowledged before disconnecting.
            with contextlib.suppress(TimeoutError, AttributeError):
                await asyncio.wait_for(client.client._persistent_storage.wait_empty(), 2)
            if clean:
                # QoS 0: a QoS 1 message still in flight at disconnect leaks gmqtt's socket
                client.publish(self.topic("status"), b"offline", qos=0, retain=True)
                await asyncio.sleep(0)
            await client.close()


async def command_status(
    stack: Stack, cid: str, *statuses: str, timeout: float = 10.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await stack.http.get(f"/api/commands/{cid}")
        body: dict[str, Any] = r.json()
        return body if body["status"] in statuses else None

    result: dict[str, Any] = await stack.wait_for(probe, timeout=timeout)
    return result


async def device_status(stack: Stack, device_id: str, status: str) -> None:
    async def probe() -> bool:
        r = await stack.http.get(f"/api/devices/{device_id}")
        return r.status_code == 200 and r.json()["status"] == status

    await stack.wait_for(probe)
