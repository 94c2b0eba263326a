"""The largest fleet one platform holds on this machine: `iotp serve` in secure mode (the
default: every device its own broker account) on PostgreSQL with its supervised
Mosquitto, and simulated devices (`iotp simulate`, the real firmware) reporting one
message every --interval seconds each.

    python bench/largest_fleet.py                       # 15,000 devices, 30 min steady
    python bench/largest_fleet.py --devices max         # as many as the open-file limit allows
    python bench/largest_fleet.py --devices 1200 --drop 200 --soak-minutes 2   # a quick check

What it does and measures, everything on this machine (loopback, a database of its own):

1. A fresh PostgreSQL database, `iotp db upgrade`, then `iotp serve` (API, worker and
   provisioner in one process, Mosquitto as its child) with this process's soft
   open-file limit raised to the hard one, which both inherit.
2. Credentials for every device issued in bulk through the services layer
   (iotp.services.credentials.issue, 1,000 per transaction), timed; the platform
   writes them to the broker's password file and reloads it; the bench waits until the
   file holds them all and the broker accepts the last one.
3. The fleet: `iotp simulate --credentials FILE` processes, a "drop" group of --drop
   devices in a process of its own and the rest split into processes of at most
   --per-simulator devices. Their CPU time and memory are measured apart from the
   platform's.
4. Phase 1: time until the API shows every device registered and online (exact counts).
5. Phase 2: --soak-minutes of steady reporting, sampled every 30 s: devices online,
   messages stored per second (ingest_counts), RSS of the platform process and of
   Mosquitto, the simulators' CPU and RSS, load average. Memory is flat when it does not
   grow from 25% of the run to its end (as bench/soak.py reports it).
6. Phase 3: the drop group's process is stopped (SIGSTOP: its sockets stay open and
   nothing is sent, a network drop rather than a clean disconnect); time until the API
   shows exactly N-drop online and drop offline, compared with the platform's offline
   timeout (missed reports: max(IOTP_OFFLINE_MISSED_REPORTS x interval,
   IOTP_OFFLINE_MIN_SECONDS)) and the broker's keepalive expiry (1.5 x the firmware's 60 s
   keepalive, which publishes the last will); the presence events say which fired. Then
   SIGCONT and the time until exactly N are online again.

The ceiling: Mosquitto holds one open file per connected device, in one process, so a
fleet on one broker is bounded by the per-process open-file hard limit (`ulimit -Hn`)
less what the broker needs for itself (--devices max: that limit less
BROKER_RESERVED_FILES). The simulators are split into processes to stay under the same
limit each. Every wait has a deadline: the script exits non-zero with a message when
one passes, and also when a device was offline during the steady phase, the drop took
longer than the timeout (+ SHOW_SLACK_S) to show, or a device outside the drop went
offline. It stops every process it started and drops its database at the end. The
default run takes about 37 minutes; it ends with a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

ADMIN_PASSWORD = "bench-admin-password-1"
# Mosquitto's own open files beside one per device: stdio, epoll, two listeners, the
# platform's connections (worker, API, provisioner), the persistence file, the password
# and ACL files while reloading, the bench's probe.
BROKER_RESERVED_FILES = 64
SIMULATOR_RESERVED_FILES = 300  # the simulator's own (FD_HEADROOM in the simulator, and more)
ISSUE_BATCH = 1000
SAMPLE_SECONDS = 30.0
API_ATTEMPTS = 3
POLL_SECONDS = 0.5
FIRMWARE_KEEPALIVE_S = 60  # firmware/iotfw/settings.py mqtt_keepalive
BROKER_EXPIRY_FACTOR = 1.5  # Mosquitto drops a silent client after 1.5 keepalives
PRESENCE_SWEEP_S = 1.0  # iotp.worker.service.PRESENCE_SWEEP_SECONDS
# From the last message to the API showing it offline: the status write and the poll.
SHOW_SLACK_S = 5.0
SEED = 1


class BenchFailed(RuntimeError):
    """A deadline passed or a count was not what it must be."""


@dataclass
class Group:
    prefix: str
    ids: list[str]
    credentials: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None


@dataclass
class Sample:
    t: float
    online: int
    registered: int
    stored: int
    serve_rss: float
    mosquitto_rss: float
    sim_rss: float
    serve_cpu: float
    mosquitto_cpu: float
    sim_cpu: float
    load1: float


# ---- the platform's view --------------------------------------------------------------


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.token = h.login(url, ADMIN_PASSWORD)

    def count(self, status: str | None = None) -> int:
        """The API's device count (``/api/devices``), all or with this status."""
        query = "?limit=1" + (f"&status={status}" if status else "")
        req = urllib.request.Request(
            f"{self.url}/api/devices{query}", headers={"Authorization": f"Bearer {self.token}"}
        )
        for attempt in range(API_ATTEMPTS):
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return int(orjson.loads(r.read())["count"])
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    raise
                self.token = h.login(self.url, ADMIN_PASSWORD)  # the token expired: again
                return self.count(status)
            except OSError as exc:  # a slow answer on a loaded machine: once more
                if attempt == API_ATTEMPTS - 1:
                    raise BenchFailed(f"the API did not answer: {exc}") from exc
                time.sleep(1)
        raise AssertionError("unreachable")

    def counts(self) -> tuple[int, int, int]:
        """(registered, online, offline)."""
        return self.count(), self.count("online"), self.count("offline")


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def stored_rows(dsn: str) -> int:
    rows = asyncio.run(_fetch(dsn, "SELECT coalesce(sum(stored), 0) AS n FROM ingest_counts"))
    return int(rows[0]["n"])


def presence_reasons(dsn: str, ids: list[str], status: str, since: float) -> dict[str, int]:
    """How the platform moved these devices to ``status`` since ``since``: reason -> count
    (timeout: missed reports; status: the device's status topic, a last will or a birth;
    data: a message on the same connection)."""
    rows = asyncio.run(
        _fetch(
            dsn,
            "SELECT data->>'reason' AS reason, count(*) AS n FROM device_events "
            "WHERE type = 'status' AND data->>'status' = $1 AND ts >= $2 "
            "AND device_id = ANY($3::text[]) GROUP BY 1",
            status,
            since,
            ids,
        )
    )
    return {str(r["reason"]): int(r["n"]) for r in rows}


def transition_span(dsn: str, ids: list[str], status: str, since: float) -> str:
    """When the worker decided these transitions (their events' time), from ``since``:
    the decision itself, apart from writing it and the API showing it."""
    rows = asyncio.run(
        _fetch(
            dsn,
            "SELECT min(ts) AS first, max(ts) AS last FROM device_events "
            "WHERE type = 'status' AND data->>'status' = $1 AND ts >= $2 "
            "AND device_id = ANY($3::text[])",
            status,
            since,
            ids,
        )
    )
    first, last = rows[0]["first"], rows[0]["last"]
    if first is None:
        return "no transitions recorded"
    return f"decided {first - since:.1f} to {last - since:.1f} s after"


# ---- credentials ----------------------------------------------------------------------


async def issue_credentials(dsn: str, ids: list[str]) -> dict[str, str]:
    """Each device's secret, issued the way an admin's POST /api/credentials/{id} does."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from iotp.db.engine import make_engine
    from iotp.services import credentials as cred_service

    engine = make_engine("postgresql+asyncpg://" + dsn.split("://", 1)[1])
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    issued: dict[str, str] = {}
    try:
        for k in range(0, len(ids), ISSUE_BATCH):
            async with sessions.begin() as session:
                for device_id in ids[k : k + ISSUE_BATCH]:
                    _, issued[device_id] = await cred_service.issue(session, device_id=device_id)
    finally:
        await engine.dispose()
    return issued


def broker_accounts(passwd: Path) -> set[str]:
    try:
        text = passwd.read_text()
    except OSError:
        return set()
    return {line.split(":", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


async def broker_accepts(url: str, user: str, password: str) -> bool:
    host, port = h.split_url(url)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(h.connect_packet(user, 60, user, password))
        connack = await asyncio.wait_for(reader.readexactly(4), 10)
        writer.write(b"\xe0\x00")  # DISCONNECT: a clean close, no last will
        await writer.drain()
        return connack[3] == 0
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()


# ---- processes ------------------------------------------------------------------------


def find_mosquitto(serve_pid: int) -> int:
    for pid in h.children(serve_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto":
                return pid
        except OSError:
            continue
    raise BenchFailed("no mosquitto process under `iotp serve`")


def cpu(pid: int) -> float:
    try:
        return h.cpu_seconds(pid)
    except OSError:
        return 0.0


def start_simulator(group: Group, url: str, interval: float, workdir: Path) -> None:
    group.log = workdir / f"simulate-{group.prefix}.log"
    with open(group.log, "ab") as out:
        group.proc = subprocess.Popen(
            [
                h.PY,
                "-m",
                "iotp.cli",
                "simulate",
                "--devices",
                str(len(group.ids)),
                "--broker",
                url,
                "--interval",
                str(interval),
                "--seed",
                str(SEED),
                "--id-prefix",
                group.prefix,
                "--credentials",
                str(group.credentials),
            ],
            env={**os.environ, "IOTP_LOG_LEVEL": "WARNING"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_simulators(groups: list[Group]) -> None:
    running = [g.proc for g in groups if g.proc is not None and g.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_alive(serve: subprocess.Popen[bytes], groups: list[Group]) -> None:
    if serve.poll() is not None:
        raise BenchFailed(f"`iotp serve` exited with {serve.returncode}")
    for g in groups:
        if g.proc is not None and g.proc.poll() is not None:
            raise BenchFailed(
                f"simulator {g.prefix} exited with {g.proc.returncode} (log: {g.log})"
            )


# ---- reporting ------------------------------------------------------------------------


def flatness(values: list[float]) -> str:
    """start, 25% of the run, end, peak, and the growth from 25% to the end."""
    quarter = values[max(1, len(values) // 4)] if len(values) > 1 else values[0]
    end = values[-1]
    growth = 100 * (end - quarter) / quarter if quarter else 0.0
    return (
        f"{values[0]:.1f} MB at start, {quarter:.1f} MB at 25%, {end:.1f} MB at the end "
        f"(peak {max(values):.1f}): {growth:+.1f}% after warm-up"
    )


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    what: str,
    deadline_s: float,
    check: Callable[[], tuple[bool, str]],
    *,
    alive: Callable[[], None],
    progress_s: float = 10.0,
) -> float:
    """Polls ``check()`` (returns (done, progress line)) until done; seconds it took."""
    started = time.monotonic()
    next_note = started + progress_s
    while True:
        alive()
        done, note = check()
        now = time.monotonic()
        if done:
            return now - started
        if now - started > deadline_s:
            raise BenchFailed(f"{what}: not within {deadline_s:.0f} s ({note})")
        if now >= next_note:
            print(f"    {now - started:5.0f} s  {note}", flush=True)
            next_note = now + progress_s
        time.sleep(POLL_SECONDS)


# ---- the run --------------------------------------------------------------------------


def run(args: argparse.Namespace, devices: int, hard: int, workdir: Path) -> list[str]:
    from iotp.simulator import node_ids

    drop = args.drop
    main_sizes: list[int] = []
    rest = devices - drop
    while rest > 0:
        main_sizes.append(min(rest, args.per_simulator))
        rest -= main_sizes[-1]
    groups = [
        Group(
            f"FLEET{i}", node_ids(n, seed=SEED, id_prefix=f"FLEET{i}"), workdir / f"FLEET{i}.json"
        )
        for i, n in enumerate(main_sizes)
    ]
    drop_group = Group("DROP", node_ids(drop, seed=SEED, id_prefix="DROP"), workdir / "DROP.json")
    groups.append(drop_group)
    all_ids = [i for g in groups for i in g.ids]
    if len(set(all_ids)) != devices:
        raise BenchFailed("two simulated devices share a node id: change SEED")

    api_port, mqtt_port = h.free_port(), h.free_port()
    with h.pg_database() as dsn:
        env = {
            "IOTP_DATABASE_URL": dsn,
            "IOTP_DATA_DIR": str(workdir / "data"),
            "IOTP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "IOTP_SECRET_KEY": "bench-" + "k" * 40,
            "IOTP_LOG_LEVEL": "WARNING",
            "IOTP_ACCESS_TOKEN_MINUTES": "600",
        }
        h.migrate(env)
        serve_log = workdir / "serve.log"
        # `iotp serve` in secure mode (the default): IOTP_OPEN is not set.
        with h.platform_process(
            "serve",
            env,
            "--port",
            str(api_port),
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(mqtt_port),
            "--data-dir",
            env["IOTP_DATA_DIR"],
            open_mode=False,
            log=serve_log,
        ) as serve:
            try:
                return measure(
                    args, devices, hard, workdir, dsn, serve, api_port, mqtt_port, groups
                )
            except BaseException:
                print(f"--- iotp serve's log ({serve_log}):\n{tail(serve_log)}", file=sys.stderr)
                for g in groups:
                    if g.log is not None:
                        print(f"--- simulator {g.prefix}:\n{tail(g.log, 5)}", file=sys.stderr)
                raise
            finally:
                stop_simulators(groups)


def measure(
    args: argparse.Namespace,
    devices: int,
    hard: int,
    workdir: Path,
    dsn: str,
    serve: subprocess.Popen[bytes],
    api_port: int,
    mqtt_port: int,
    groups: list[Group],
) -> list[str]:
    api_url = f"http://127.0.0.1:{api_port}"
    device_url = f"mqtt://127.0.0.1:{mqtt_port}"
    h.wait_health(api_url, timeout=120)
    api = Api(api_url)
    mosq = find_mosquitto(serve.pid)
    mosq_limit = h.open_file_limit(mosq)
    conf = (workdir / "data" / "mosquitto" / "mosquitto.conf").read_text()
    max_conn = [line for line in conf.splitlines() if line.startswith("max_connections")]
    print(
        f"platform: iotp serve pid {serve.pid} (API + worker + provisioner in one process), "
        f"Mosquitto pid {mosq} (open-file limit {mosq_limit}, "
        f"{max_conn[0] if max_conn else 'max_connections not set: unlimited'}), secure mode",
        flush=True,
    )
    if 0 <= mosq_limit < devices + BROKER_RESERVED_FILES:
        raise BenchFailed(f"Mosquitto may open {mosq_limit} files: too few for {devices} devices")

    def alive() -> None:
        check_alive(serve, groups)

    # -- credentials --------------------------------------------------------------------
    all_ids = [i for g in groups for i in g.ids]
    t0 = time.monotonic()
    issued = asyncio.run(issue_credentials(dsn, all_ids))
    issue_s = time.monotonic() - t0
    print(f"issued {len(issued):,} device credentials in {issue_s:.1f} s", flush=True)
    for g in groups:
        g.credentials.write_text(json.dumps({i: issued[i] for i in g.ids}))
    passwd = workdir / "data" / "mosquitto" / "passwd-devices"
    wanted = set(all_ids)
    probe_id = all_ids[-1]

    def accounts_loaded() -> tuple[bool, str]:
        missing = len(wanted - broker_accounts(passwd))
        if missing:
            return False, f"{missing:,} accounts not yet in {passwd.name}"
        return asyncio.run(broker_accepts(device_url, probe_id, issued[probe_id])), "reloading"

    loaded_s = wait_for("the broker's accounts", 120, accounts_loaded, alive=alive)
    print(f"the broker accepts them {loaded_s:.1f} s later", flush=True)

    # -- phase 1: all registered and online ---------------------------------------------
    for g in groups:
        start_simulator(g, device_url, args.interval, workdir)
    print(
        f"phase 1: {len(groups)} simulator processes "
        f"({', '.join(f'{g.prefix} {len(g.ids):,}' for g in groups)}), every {args.interval:g} s",
        flush=True,
    )

    def all_online() -> tuple[bool, str]:
        registered, online, offline = api.counts()
        note = f"registered {registered:,}, online {online:,}, offline {offline:,} of {devices:,}"
        return registered == devices and online == devices, note

    online_s = wait_for(
        "all devices registered and online", 180 + devices / 20, all_online, alive=alive
    )
    registered, online, offline = api.counts()
    print(
        f"  all {online:,} online ({registered:,} registered, {offline} offline) "
        f"{online_s:.0f} s after the simulators started",
        flush=True,
    )

    # -- phase 2: steady ----------------------------------------------------------------
    sims = [g.proc.pid for g in groups if g.proc is not None]
    samples: list[Sample] = []

    def sample(t: float) -> Sample:
        registered, online, _ = api.counts()
        s = Sample(
            t=t,
            online=online,
            registered=registered,
            stored=stored_rows(dsn),
            serve_rss=h.rss_mb(serve.pid),
            mosquitto_rss=h.rss_mb(mosq),
            sim_rss=sum(h.rss_mb(p) for p in sims),
            serve_cpu=cpu(serve.pid),
            mosquitto_cpu=cpu(mosq),
            sim_cpu=sum(cpu(p) for p in sims),
            load1=os.getloadavg()[0],
        )
        rate = 0.0
        if samples:
            rate = (s.stored - samples[-1].stored) / max(s.t - samples[-1].t, 1e-9)
        print(
            f"  t={t:5.0f} s  online {s.online:>6,}  stored/s {rate:7.1f}  "
            f"serve RSS {s.serve_rss:6.1f} MB  mosquitto RSS {s.mosquitto_rss:6.1f} MB  "
            f"simulators RSS {s.sim_rss:6.1f} MB  load {s.load1:.1f}",
            flush=True,
        )
        return s

    soak_s = args.soak_minutes * 60
    print(f"phase 2: {args.soak_minutes:g} min steady, a sample every {SAMPLE_SECONDS:.0f} s")
    began = time.monotonic()
    while True:
        alive()
        t = time.monotonic() - began
        samples.append(sample(t))
        if t >= soak_s:
            break
        time.sleep(
            max(0.0, min(SAMPLE_SECONDS * len(samples), soak_s) - (time.monotonic() - began))
        )
    first, last = samples[0], samples[-1]
    span = last.t - first.t or 1.0
    rate = (last.stored - first.stored) / span
    low = min(s.online for s in samples)
    serve_cpu = 100 * (last.serve_cpu - first.serve_cpu) / span
    mosq_cpu = 100 * (last.mosquitto_cpu - first.mosquitto_cpu) / span
    sim_cpu = 100 * (last.sim_cpu - first.sim_cpu) / span
    load = [s.load1 for s in samples]

    # -- phase 3: drop and return -------------------------------------------------------
    drop_group = groups[-1]
    assert drop_group.proc is not None
    drop = len(drop_group.ids)
    timeout = max(3 * args.interval, 6.0)  # IOTP_OFFLINE_MISSED_REPORTS, IOTP_OFFLINE_MIN_SECONDS
    expiry = BROKER_EXPIRY_FACTOR * FIRMWARE_KEEPALIVE_S
    print(
        f"phase 3: SIGSTOP the {drop:,} devices of {drop_group.prefix} "
        f"(offline timeout {timeout:.0f} s of missed reports; broker keepalive expiry "
        f"{expiry:.0f} s, then the last will)",
        flush=True,
    )
    first_offline: list[float] = []

    def dropped() -> tuple[bool, str]:
        _, online, offline = api.counts()
        if offline and not first_offline:
            first_offline.append(time.monotonic() - stop_at)
        note = f"online {online:,}, offline {offline:,}"
        return online == devices - drop and offline == drop, note

    stop_wall = time.time()
    stop_at = time.monotonic()
    drop_group.proc.send_signal(signal.SIGSTOP)
    try:
        offline_s = wait_for(
            f"exactly {devices - drop:,} online and {drop:,} offline",
            expiry + 60,
            dropped,
            alive=alive,
        )
        registered, online_d, offline_d = api.counts()
        down_reasons = presence_reasons(dsn, drop_group.ids, "offline", stop_wall)
        down_span = transition_span(dsn, drop_group.ids, "offline", stop_wall)
        others = presence_reasons(
            dsn, [i for g in groups[:-1] for i in g.ids], "offline", stop_wall
        )
        print(
            f"  {online_d:,} online, {offline_d:,} offline ({registered:,} registered) "
            f"{offline_s:.1f} s after the drop (first offline after {first_offline[0]:.1f} s); "
            f"how: {down_reasons}, {down_span}; other devices gone offline: "
            f"{sum(others.values())}",
            flush=True,
        )
    finally:
        back_wall = time.time()
        drop_group.proc.send_signal(signal.SIGCONT)

    def returned() -> tuple[bool, str]:
        _, online, offline = api.counts()
        return online == devices and offline == 0, f"online {online:,}, offline {offline:,}"

    back_s = wait_for(f"all {devices:,} online again", expiry + 60, returned, alive=alive)
    registered, online_r, offline_r = api.counts()
    up_reasons = presence_reasons(dsn, drop_group.ids, "online", back_wall)
    up_span = transition_span(dsn, drop_group.ids, "online", back_wall)
    print(
        f"  {online_r:,} online, {offline_r} offline {back_s:.1f} s after SIGCONT; "
        f"how: {up_reasons}, {up_span}",
        flush=True,
    )
    fired = (
        "the missed-report timeout"
        if down_reasons.get("timeout", 0) == drop
        else f"reasons {down_reasons}"
    )
    machine_line = h.machine()
    rows = [
        ("machine", machine_line),
        (
            "fleet",
            f"{devices:,} simulated devices (`iotp simulate`, real firmware), one message per "
            f"{args.interval:g} s each = {devices / args.interval:,.0f} msg/s expected; "
            f"{len(groups)} simulator processes",
        ),
        (
            "ceiling",
            f"open-file hard limit {hard:,} per process; Mosquitto holds one per device "
            f"(--devices max = {hard - BROKER_RESERVED_FILES:,})",
        ),
        ("security", "secure mode (default): one broker account per device, issued credentials"),
        (
            "credentials",
            f"{devices:,} issued in {issue_s:.1f} s (services layer, {ISSUE_BATCH:,} per "
            f"transaction); accepted by the broker {loaded_s:.1f} s later",
        ),
        ("all registered and online", f"{online:,} / {devices:,} after {online_s:.0f} s"),
        (
            "steady state",
            f"{args.soak_minutes:g} min: online {low:,} at the lowest; {rate:,.1f} msg/s stored "
            f"(expected {devices / args.interval:,.1f})",
        ),
        (
            "iotp serve RSS (API + worker + provisioner, one process)",
            flatness([s.serve_rss for s in samples]),
        ),
        ("Mosquitto RSS", flatness([s.mosquitto_rss for s in samples])),
        (
            "CPU (% of one core, steady)",
            f"iotp serve {serve_cpu:.0f}%, Mosquitto {mosq_cpu:.0f}%, simulators {sim_cpu:.0f}%",
        ),
        (
            "simulators (apart)",
            f"CPU {sim_cpu:.0f}% of one core, RSS {last.sim_rss:,.0f} MB in {len(sims)} processes",
        ),
        (
            f"drop of {drop:,} (SIGSTOP)",
            f"exactly {online_d:,} online / {offline_d:,} offline after {offline_s:.1f} s "
            f"(first after {first_offline[0]:.1f} s); timeout {timeout:.0f} s + sweep "
            f"{PRESENCE_SWEEP_S:.0f} s, broker expiry {expiry:.0f} s; fired: {fired} "
            f"({down_span} the drop); "
            f"others offline: {sum(others.values())}",
        ),
        (
            "return (SIGCONT)",
            f"exactly {online_r:,} online / {offline_r} offline after {back_s:.1f} s "
            f"({up_reasons}, {up_span} SIGCONT)",
        ),
        (
            "load average (1 min)",
            f"{min(load):.1f} to {max(load):.1f} during the steady phase; "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end",
        ),
    ]
    table = ["| measure | result |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    series = [
        "| t (s) | online | stored | iotp serve RSS | Mosquitto RSS | simulators RSS | load |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {s.t:.0f} | {s.online:,} | {s.stored:,} | {s.serve_rss:.1f} MB | "
            f"{s.mosquitto_rss:.1f} MB | {s.sim_rss:.1f} MB | {s.load1:.1f} |"
            for s in samples
        ),
    ]
    failures = []
    if low != devices:
        failures.append(f"only {low:,} of {devices:,} online during the steady phase")
    if offline_s > timeout + PRESENCE_SWEEP_S + SHOW_SLACK_S:
        failures.append(f"the drop took {offline_s:.1f} s to show, past the timeout")
    if sum(others.values()):
        failures.append(f"{sum(others.values())} devices outside the drop went offline")
    return [*table, "", *series, *(["", *(f"FAILED: {f}" for f in failures)] if failures else [])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", default="15000", help="fleet size, or `max`: what the open-file limit allows"
    )
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--drop", type=int, default=1000, help="devices that drop at once")
    parser.add_argument(
        "--per-simulator", type=int, default=10_000, help="devices per simulator process at most"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # `iotp serve` and Mosquitto
    ceiling = hard - BROKER_RESERVED_FILES
    devices = ceiling if args.devices == "max" else int(args.devices)
    if devices > ceiling:
        sys.exit(
            f"{devices:,} devices need more open files than Mosquitto may have "
            f"({hard:,} per process, {BROKER_RESERVED_FILES} for itself): at most {ceiling:,}"
        )
    if not 0 < args.drop < devices:
        sys.exit("--drop must be between 1 and the fleet size")
    args.per_simulator = min(args.per_simulator, hard - SIMULATOR_RESERVED_FILES)
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    if devices + 1000 > int(ports[1]) - int(ports[0]):
        sys.exit(f"{devices:,} loopback connections need more local ports than {ports}")
    print(f"machine: {h.machine()}")
    print(
        f"open files: soft {soft:,} raised to the hard limit {hard:,} per process; "
        f"fleet {devices:,} devices, drop {args.drop:,}, every {args.interval:g} s, "
        f"{args.soak_minutes:g} min steady; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="iotp-bench-largest-"))
    started = time.monotonic()
    try:
        report = run(args, devices, hard, workdir)
    except BenchFailed as exc:
        print(f"FAILED: {exc} (work directory {workdir})", file=sys.stderr)
        sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nload average at the end: {os.getloadavg()}; took {time.monotonic() - started:.0f} s\n"
    )
    print("\n".join(report))
    if any(line.startswith("FAILED") for line in report):
        sys.exit(1)


if __name__ == "__main__":
    main()
