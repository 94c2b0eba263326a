"""`iotp serve` as a user runs it: a real process on embedded defaults."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from iotp.netutil import free_port
from tests.support import MqttTestClient, eventually

PASSWORD = "serve-test-Pass-1"


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "iotp.cli", "serve", "--data-dir", str(tmp_path), *args],
        env={**os.environ, "IOTP_ADMIN_PASSWORD": PASSWORD, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_explicit_port_that_is_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        proc = _serve(tmp_path, "--port", str(free_port()), "--mqtt-port", str(taken))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"MQTT port {taken}" in out
    assert "already in use" in out


async def test_serve_ingests_and_flushes_pending_writes_on_shutdown(tmp_path: Path) -> None:
    http_port, mqtt_port = free_port(), free_port()
    # A long batch delay keeps the data pending until shutdown must flush it.
    proc = _serve(
        tmp_path,
        "--port",
        str(http_port),
        "--mqtt-port",
        str(mqtt_port),
        "--mqtt-host",
        "127.0.0.1",
        "--open",  # the device below connects without credentials, on purpose
        IOTP_BATCH_MAX_DELAY_MS="10000",
    )
    try:
        api = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=api, timeout=5) as http:

            async def healthy() -> bool:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                return (await http.get("/api/health")).status_code == 200

            await eventually(
                healthy,
                timeout=60,
                interval=0.2,
                what="iotp serve healthy",
                retry_on=(httpx.TransportError,),
            )
            token = (
                await http.post("/api/auth/token", data={"username": "admin", "password": PASSWORD})
            ).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            device = await MqttTestClient(f"mqtt://127.0.0.1:{mqtt_port}").connect()
            device.publish("devices/A4CF12B3C4D5/data", b'{"temperature": 21.5, "seq": 1}')

            async def registered() -> httpx.Response | None:
                r = await http.get("/api/devices/A4CF12B3C4D5")
                return r if r.status_code == 200 else None

            r = await eventually(registered, timeout=30, what="the device registered")
            assert r.json()["name"] == "ESP32-B3C4D5"
            rows = sqlite3.connect(tmp_path / "iotp.db").execute("SELECT count(*) FROM telemetry")
            assert rows.fetchone()[0] == 0  # still pending in the batch
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        await device.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "IoT Platform is running" in out
    assert f"mqtt://127.0.0.1:{mqtt_port}" in out
    with sqlite3.connect(tmp_path / "iotp.db") as db:
        assert db.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 1
