"""The platform's processes as they run in production (`python -m iotp.cli worker|api`),
started, killed and restarted by the scale-out and fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

from iotp.netutil import free_port
from tests.support import MOSQUITTO, TEST_ADMIN_PASSWORD, _wait_port, eventually, need

ROOT = Path(__file__).resolve().parents[2]

# For eventually(retry_on=...): a process still starting answers with an error.
STARTING: tuple[type[BaseException], ...] = (Exception,)


@dataclass
class Proc:
    """One platform process; restartable with the same environment."""

    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iotp.cli", *self.args],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        out.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def platform_env(db_url: str, mqtt_url: str, **extra: Any) -> dict[str, str]:
    env = {
        # Open mode on purpose: these processes meet faults, not strangers.
        "IOTP_OPEN": "true",
        "IOTP_DATABASE_URL": db_url,
        "IOTP_MQTT_URL": mqtt_url,
        "IOTP_ADMIN_PASSWORD": TEST_ADMIN_PASSWORD,
        "IOTP_LOG_LEVEL": "WARNING",
        "IOTP_BATCH_MAX_DELAY_MS": "20",
        "IOTP_STATS_FLUSH_SECONDS": "0.5",
        "IOTP_DATA_DIR": tempfile.mkdtemp(prefix="iotp-proc-"),
    }
    env.update({f"IOTP_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def worker(name: str, env: dict[str, str], logdir: Path, **extra: Any) -> Proc:
    wenv = {**env, "IOTP_MQTT_CLIENT_ID": name}
    wenv.update({f"IOTP_{k.upper()}": str(v) for k, v in extra.items()})
    return Proc(["worker"], wenv, logdir / f"{name}.log")


def api(name: str, env: dict[str, str], logdir: Path) -> tuple[Proc, int]:
    port = free_port()
    return Proc(["api", "--port", str(port)], env, logdir / f"{name}.log"), port


@dataclass
class Cluster:
    """Worker and API processes on one database and one broker."""

    db_url: str
    mqtt_url: str
    workers: list[Proc]
    apis: list[tuple[Proc, int]]  # the process and its HTTP port
    metrics_ports: list[int]  # each worker's Prometheus port (when asked for)


@contextlib.asynccontextmanager
async def run_cluster(
    name: str,
    logdir: Path,
    db_url: str,
    mqtt_url: str,
    *,
    workers: int = 0,
    apis: int = 0,
    worker_metrics: bool = False,
    ready_timeout: float = 60.0,
    **env: Any,
) -> AsyncIterator[Cluster]:
    """``workers`` `iotp worker` and ``apis`` `iotp api` processes (each composes its
    parts with `runtime.Platform`) on a migrated database and a running broker, as
    production runs them. Returns once every worker has reported itself connected
    (PostgreSQL: its stats row) and every API answers its health check. Whatever
    started is stopped on the way out, in reverse, also when a later process fails
    to start; then every process's log tail is printed."""
    if workers and not db_url.startswith("postgresql"):
        raise ValueError("workers report themselves connected in PostgreSQL")
    base = platform_env(db_url, mqtt_url, **env)
    metrics_ports = [free_port() for _ in range(workers)] if worker_metrics else []
    metrics: list[dict[str, Any]] = [
        {"metrics_port": port, "metrics_host": "127.0.0.1"} for port in metrics_ports
    ] or [{}] * workers
    worker_procs = [worker(f"{name}-w{i}", base, logdir, **metrics[i]) for i in range(workers)]
    api_procs = [api(f"{name}-api{i}", base, logdir) for i in range(apis)]
    procs = [*worker_procs, *(p for p, _ in api_procs)]
    started: list[Proc] = []
    since = time.time()
    try:
        for p in procs:
            started.append(p.start())
        if workers:

            async def all_connected() -> bool:
                return await workers_connected(db_url, since) == workers

            await eventually(all_connected, timeout=ready_timeout, retry_on=STARTING)
        for _, port in api_procs:
            await eventually(
                lambda port=port: api_healthy(port),
                timeout=ready_timeout,
                interval=0.1,
                retry_on=STARTING,
            )
        yield Cluster(db_url, mqtt_url, worker_procs, api_procs, metrics_ports)
    except BaseException:
        for p in procs:
            print(f"---- {p.log.name}\n{p.tail()}")
        raise
    finally:
        for p in reversed(started):
            p.stop()


async def pg_value(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def workers_connected(dsn: str, since: float) -> int:
    rows = await pg_value(
        dsn,
        "SELECT count(*) FROM component_stats WHERE kind = 'worker' AND updated_at > $1 "
        "AND (data->>'mqtt_connected')::boolean",
        since,
    )
    return int(rows or 0)


async def api_healthy(port: int) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(f"http://127.0.0.1:{port}/api/health")
        return r.status_code == 200


async def token(port: int) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"http://127.0.0.1:{port}/api/auth/token",
            data={"username": "admin", "password": TEST_ADMIN_PASSWORD},
        )
        r.raise_for_status()
        value: str = r.json()["access_token"]
        return value


@dataclass
class LiveClient:
    """A WebSocket client of one API process that reconnects and resubscribes, as the
    dashboard does (web/src/live), recording every event it receives."""

    port: int
    events: list[str]
    received: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> LiveClient:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                url = f"ws://127.0.0.1:{self.port}/api/ws?token={await token(self.port)}"
                async with websockets.connect(url, open_timeout=10) as ws:
                    await ws.send(
                        orjson.dumps(
                            {"action": "subscribe", "events": self.events, "devices": ["*"]}
                        ).decode()
                    )
                    self.connects += 1
                    delay = 0.2
                    async for message in ws:
                        event = orjson.loads(message)
                        if event.get("type") == "subscribed":
                            self.subscribed.set()
                        else:
                            self.received.append(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # the API is away: reconnect with backoff
                self.subscribed.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def count(self, event_type: str) -> int:
        return sum(1 for e in self.received if e.get("type") == event_type)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


# ---- a persistent Mosquitto we can restart ---------------------------------------------


@dataclass
class PersistentMosquitto:
    port: int
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # Mosquitto saves its persistence file on SIGTERM
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def persistent_mosquitto() -> PersistentMosquitto:
    need(os.path.exists(MOSQUITTO), "mosquitto binary")
    work = Path(tempfile.mkdtemp(prefix="iotp-fault-mosq-"))
    work.chmod(0o777)  # Mosquitto started as root drops to its own user
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {work}/\nautosave_interval 1\n"
        "max_queued_messages 10000000\nmax_inflight_messages 0\nlog_dest none\n"
    )
    server = PersistentMosquitto(port, conf)
    server.start()
    return server
