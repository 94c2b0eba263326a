"""`iotp broker`: the embedded amqtt broker alone, without a database in open mode, and
nothing left open when it cannot start."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from amqtt.errors import BrokerError

from iotp.netutil import free_port
from iotp.runtime import run_broker
from iotp.settings import Settings
from tests.support import PG_ADMIN_DSN, MqttTestClient, eventually, pg_database


async def test_broker_alone_relays_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iotp.cli", "broker", "--host", "127.0.0.1", "--port", str(port)],
        # Open mode on purpose: the clients below connect without credentials.
        env={**os.environ, "IOTP_DATA_DIR": str(tmp_path), "IOTP_OPEN": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"mqtt://127.0.0.1:{port}"
        observer = await eventually(
            lambda: MqttTestClient(url).connect(), what="the broker listens", retry_on=(OSError,)
        )
        device = await MqttTestClient(url).connect()
        try:
            await observer.subscribe("devices/#")
            device.publish("devices/A1/data", '{"t": 1}')
            topic, payload = await asyncio.wait_for(observer.messages.get(), 5)
            assert (topic, payload) == ("devices/A1/data", b'{"t": 1}')
        finally:
            await device.close()
            await observer.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert f"embedded MQTT broker on {url}" in out
    # Open mode: no device credentials to read, so no database is made.
    assert not (tmp_path / "iotp.db").exists()


async def _connections_to(database: str) -> int:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return count
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_broker_that_cannot_listen_closes_its_database(tmp_path: Path) -> None:
    """Secure mode opens the database before the broker starts: when the broker cannot
    listen, the database's connections are closed on the way out."""
    async with pg_database() as url:
        settings = Settings(data_dir=tmp_path, database_url=url, secure=True, secret_key="s" * 48)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(BrokerError, match="address already in use"):
                await run_broker("127.0.0.1", port, settings)
        # Migrating the database opened connections: none is left.
        assert await _connections_to(url.rsplit("/", 1)[1]) == 0
