"""`iotp serve --demo 2` as a user runs it, with no secrets configured: secure by
default, the secrets are generated into the data dir, the demo devices provision
themselves with the fleet secret, are approved by the demo, show up online and stream;
an anonymous CONNECT is refused; the banner's "Try:" commands (curl + mosquitto_pub) work
as printed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from iotp.netutil import free_port
from iotp.simulator import node_ids
from tests.support import eventually, need

PASSWORD = "serve-secure-Pass-1"
# Only what the banner's example needs (the admin's password); every other secret is
# generated at first start.
SECURE_ENV = {
    "IOTP_ADMIN_PASSWORD": PASSWORD,
    "IOTP_CREDENTIALS_POLL_SECONDS": "0.5",
}
MODE_VARIABLES = ("IOTP_OPEN", "IOTP_SECURE", "IOTP_SECRET_KEY", "IOTP_PROVISIONING_SECRET")


class Serve:
    """`iotp serve` in a process; its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iotp.cli", "serve", "--data-dir", str(tmp_path), *args],
            env={k: v for k, v in os.environ.items() if k not in MODE_VARIABLES} | SECURE_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


async def _healthy(http: httpx.AsyncClient, serve: Serve) -> None:
    async def healthy() -> bool:
        assert serve.proc.poll() is None, serve.output
        return (await http.get("/api/health")).status_code == 200 and "=====" in serve.output

    try:
        await eventually(
            healthy, timeout=60, interval=0.2, what="healthy", retry_on=(httpx.TransportError,)
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{serve.output}") from None


def _try_commands(output: str) -> str:
    """The banner's Try: block as a shell script."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Try:"))
    block = []
    for line in lines[start:]:
        text = line.strip()
        if text.startswith("====="):
            break
        block.append(text.removeprefix("Try:").strip())
    return "\n".join(block)


async def test_serve_secure_demo_devices_provision_and_stream(tmp_path: Path) -> None:
    http_port, mqtt_port = free_port(), free_port()
    serve = Serve(
        tmp_path,
        "--demo",
        "2",
        "--demo-interval",
        "0.5",
        "--port",
        str(http_port),
        "--mqtt-port",
        str(mqtt_port),
        "--mqtt-host",
        "127.0.0.1",
    )
    demo_ids = set(node_ids(2, seed=1))
    try:
        api = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            await _healthy(http, serve)
            token = (
                await http.post("/api/auth/token", data={"username": "admin", "password": PASSWORD})
            ).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"

            async def online_with_data() -> bool:
                body = (await http.get("/api/devices", params={"status": "online"})).json()
                online = {d["id"] for d in body["data"]}
                if not demo_ids <= online:
                    return False
                for device_id in demo_ids:
                    latest = await http.get(f"/api/devices/{device_id}/latest")
                    if "temperature" not in latest.json().get("metrics", {}):
                        return False
                return True

            async def demo_streaming() -> bool:
                assert serve.proc.poll() is None, serve.output
                return await online_with_data()

            try:
                await eventually(demo_streaming, timeout=45, interval=0.5, what="demo online")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{serve.output}") from None
            creds = (await http.get("/api/credentials")).json()
            assert {c["device_id"] for c in creds["data"]} == demo_ids
            assert {c["status"] for c in creds["data"]} == {"approved"}

            # The banner's hint, run as printed: issue credentials, publish as the device.
            need(
                bool(shutil.which("curl") and shutil.which("mosquitto_pub")), "curl, mosquitto_pub"
            )
            anonymous = subprocess.run(
                ["mosquitto_pub", "-p", str(mqtt_port), "-t", "devices/X1/data", "-m", "{}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert anonymous.returncode != 0, "an anonymous CONNECT was accepted"
            script = _try_commands(serve.output)
            assert "-i A4CF12B3C4D5 -u A4CF12B3C4D5" in script
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                env={**os.environ, "IOTP_ADMIN_PASSWORD": PASSWORD},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr + "\n" + script

            async def hint_arrived() -> bool:
                return (await http.get("/api/devices/A4CF12B3C4D5")).status_code == 200

            await eventually(hint_arrived, timeout=15, interval=0.2, what="the hint's message")
    finally:
        code = serve.stop()
    assert code == 0, serve.output
    assert "SECURE" in serve.output
    fleet = (tmp_path / "fleet_secret").read_text().strip()
    assert serve.output.count(fleet) == 1  # printed once, at first start
    assert (tmp_path / "secret_key").is_file()
    assert (tmp_path / "mosquitto" / "mosquitto.conf").is_file()
    assert (tmp_path / "demo-devices").is_dir()  # the demo devices' credentials
