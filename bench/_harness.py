"""Shared pieces of the benchmarks: our own broker and database, the platform's
processes, a load generator. Everything runs on this machine, on loopback only."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import gmqtt
import orjson
from gmqtt.mqtt.constants import MQTTv311

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PG_ADMIN = os.environ.get("IOTP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust to a noisy, shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


@contextmanager
def mosquitto() -> Iterator[str]:
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="iotp-bench-mosq-"))
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\nmax_queued_messages 10000000\nmax_inflight_messages 0\nlog_dest none\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
    try:
        wait_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def supervised_mosquitto() -> Iterator[str]:
    """Mosquitto with the configuration `iotp serve --open` writes (the platform's limits
    and listeners); the device listener's URL."""
    from iotp.broker.mosquitto import render_passwords, render_platform_acl
    from iotp.broker.supervisor import render_conf
    from iotp.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="iotp-bench-supervised-"))
    settings = Settings(open=True, secret_key="bench-" + "k" * 40, data_dir=work)
    port = free_port()
    (work / "passwd-platform").write_text(
        render_passwords(settings.mqtt_service_accounts(), "", {})
    )
    (work / "acl-platform").write_text(render_platform_acl(settings))
    conf = work / "mosquitto.conf"
    conf.write_text(
        render_conf(
            settings,
            workdir=work,
            device_host="127.0.0.1",
            device_port=port,
            platform_port=free_port(),
        )
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def embedded_broker() -> Iterator[str]:
    """amqtt (`iotp broker`), the fallback where no mosquitto binary exists."""
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "iotp.cli", "broker", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "IOTP_OPEN": "true"},  # anonymous load generator, on purpose
    )
    try:
        wait_port(port, timeout=60)  # a Python process: slow to start on a busy machine
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def pg_database() -> Iterator[str]:
    name = f"iotp_bench_{uuid.uuid4().hex[:8]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def platform_process(
    command: str,
    env: dict[str, str],
    *args: str,
    open_mode: bool = True,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``iotp <command>``, stopped with SIGTERM at the end. Most benchmarks' devices
    connect without credentials: open mode on purpose (bench/broker_auth.py measures what
    the accounts of secure mode cost); ``open_mode=False`` keeps the secure default.
    ``log``: where its output goes (default: this terminal)."""
    full_env = {**os.environ, **({"IOTP_OPEN": "true"} if open_mode else {}), **env}
    if not open_mode:
        full_env.pop("IOTP_OPEN", None)
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PY, "-m", "iotp.cli", command, *args],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if out is not None:
            out.close()


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (0 once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def open_file_limit(pid: int) -> int:
    """A running process's soft RLIMIT_NOFILE (from /proc/<pid>/limits)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return -1 if soft == "unlimited" else int(soft)
    return -1


def split_url(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit("@", 1)[-1].rsplit(":", 1)
    return host, int(port)


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """(username, password) of ``mqtt://user:pass@host:port`` (percent-decoded; on
    RabbitMQ's MQTT plugin the username may be ``vhost:user``)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    user, password = parts.username, parts.password
    return (unquote(user) if user else None, unquote(password) if password else None)


async def publish_load(
    url: str,
    *,
    devices: int,
    messages: int,
    qos: int = 1,
    window: int = 500,
    prefix: str = "BENCH",
    seq_offset: int = 0,
) -> float:
    """Publish `messages` telemetry messages round-robin from `devices` connections as
    fast as the broker takes them (at most `window` unacknowledged per connection).
    Returns the publishing time in seconds."""
    host, port = split_url(url)
    clients: list[Any] = []
    inflight: list[int] = []
    acked = asyncio.Event()

    for i in range(devices):
        c = gmqtt.Client(f"{prefix}-{i}-{uuid.uuid4().hex[:4]}")
        c.set_config({"reconnect_retries": 0})
        idx = len(clients)
        await c.connect(host, port, version=MQTTv311, keepalive=60)
        # gmqtt has no public puback hook; its storage removal marks the ack.
        original = c._remove_message_from_queue

        def removed(mid: int, _orig: Any = original, _idx: int = idx) -> None:
            _orig(mid)
            inflight[_idx] -= 1
            acked.set()

        c._package_handler._remove_message_from_queue = removed  # type: ignore[attr-defined]
        clients.append(c)
        inflight.append(0)

    ids = [f"{prefix}{i:06d}" for i in range(devices)]
    base_ts = time.time()
    started = time.monotonic()
    for n in range(messages):
        d = n % devices
        while qos and inflight[d] >= window:
            acked.clear()
            await acked.wait()
        payload = b'{"temperature":%.2f,"humidity":%.1f,"gas":%d,"ts":%.3f,"seq":%d}' % (
            20 + (n % 100) / 10,
            40 + (n % 50) / 5,
            80 + n % 40,
            base_ts + n / 1e5,
            n + seq_offset,
        )
        clients[d].publish(f"devices/{ids[d]}/data", payload, qos=qos)
        if qos:
            inflight[d] += 1
        if n % 2000 == 0:
            await asyncio.sleep(0)
    while qos and any(inflight):
        acked.clear()
        await acked.wait()
    elapsed = time.monotonic() - started
    for c in clients:
        await c.disconnect()
    return elapsed


# ---- a raw MQTT 3.1.1 load generator ------------------------------------------------
# Pre-encoded packets written straight to sockets: a Python client library would be the
# bottleneck long before the broker or the platform.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def connect_packet(
    client_id: str, keepalive: int = 60, username: str | None = None, password: str | None = None
) -> bytes:
    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = _str("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + _str(client_id)
    if username:
        body += _str(username) + (_str(password) if password else b"")
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, mid: int, qos: int = 1) -> bytes:
    body = _str(topic) + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


async def raw_publish(
    url: str,
    *,
    devices: int,
    messages: int,
    window: int = 1000,
    prefix: str = "BENCH",
    seq_offset: int = 0,
    rate: float | None = None,
) -> float:
    """Publish `messages` QoS 1 telemetry messages round-robin over `devices` connections
    (client id = topic id), at most `window` unacknowledged per connection; optionally
    paced to `rate` messages/s overall. Returns seconds until the last PUBACK."""
    host, port = split_url(url)
    credentials = url_credentials(url)
    per_device = [
        messages // devices + (1 if i < messages % devices else 0) for i in range(devices)
    ]
    base_ts = time.time()

    async def one(i: int, count: int) -> None:
        device_id = f"{prefix}{i:06d}"
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(connect_packet(f"{device_id}-{uuid.uuid4().hex[:4]}", 60, *credentials))
        connack = await reader.readexactly(4)
        if connack[3] != 0:
            raise RuntimeError(f"CONNACK refused: {connack!r}")
        topic = f"devices/{device_id}/data"
        sent = acked = 0
        chunk = 200
        start = time.monotonic()
        while acked < count:
            while sent < count and sent - acked < window:
                n = min(chunk, count - sent, window - (sent - acked))
                parts = []
                for k in range(sent, sent + n):
                    seq = k * devices + i
                    payload = (
                        b'{"temperature":%.2f,"humidity":%.1f,"gas":%d,"ts":%.4f,"seq":%d}'
                        % (
                            20 + (seq % 100) / 10,
                            40 + (seq % 50) / 5,
                            80 + seq % 40,
                            base_ts + seq / 1e4,
                            seq + seq_offset,
                        )
                    )
                    parts.append(publish_packet(topic, payload, (k % 65535) + 1))
                writer.write(b"".join(parts))
                sent += n
                if rate:
                    ahead = sent * devices / rate - (time.monotonic() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            data = await reader.read(65536)
            if not data:
                raise RuntimeError("broker closed the connection")
            acked += len(data) // 4  # PUBACKs are 4 bytes; a partial one is completed below
            rest = len(data) % 4
            if rest:
                await reader.readexactly(4 - rest)
                acked += 1
        writer.write(b"\xe0\x00")  # DISCONNECT
        await writer.drain()
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(per_device) if c))
    return time.monotonic() - started


# ---- the API of a benchmark's platform processes ------------------------------------


def percentile_ms(values: list[float], q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds (NaN for < 10)."""
    if len(values) <= 10:
        return float("nan")
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] * 1000


def migrate(env: dict[str, str]) -> None:
    """``iotp db upgrade`` on the database the environment names."""
    subprocess.run(
        [PY, "-m", "iotp.cli", "db", "upgrade"],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def login(api: str, password: str) -> str:
    """An access token for ``admin``."""
    req = urllib.request.Request(
        api + "/api/auth/token",
        data=f"username=admin&password={password}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(orjson.loads(r.read())["access_token"])


def wait_health(api: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(api + "/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("API did not become healthy")


async def raw_devices(
    url: str, prefix: str, count: int
) -> tuple[list[tuple[asyncio.StreamWriter, str]], list[asyncio.Task[None]]]:
    """``count`` devices connected with raw sockets (``{prefix}{i:06d}``, no credentials:
    the benchmarks' brokers run in open mode on purpose), each with its data topic, and
    the tasks that read away their PUBACKs (``close_raw_devices`` ends both)."""
    host, port = split_url(url)
    conns = []
    for i in range(count):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(connect_packet(f"{prefix}{i:06d}"))
        await reader.readexactly(4)
        conns.append((reader, writer, f"devices/{prefix}{i:06d}/data"))

    async def drain_acks(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    drains = [asyncio.create_task(drain_acks(r)) for r, _, _ in conns]
    return [(w, topic) for _, w, topic in conns], drains


def close_raw_devices(
    conns: list[tuple[asyncio.StreamWriter, str]], drains: list[asyncio.Task[None]]
) -> None:
    for writer, _ in conns:
        writer.close()
    for d in drains:
        d.cancel()
