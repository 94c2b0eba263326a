"""Fleet simulator benchmark: the largest fleet that sustains its report rate.

Starts its own Mosquitto on a free port (max_connections unlimited, a large
max_queued_messages), runs `iotp.simulator.Fleet` in this process (one asyncio loop),
and counts what reaches the broker with `mosquitto_sub` in a separate process.

A fleet size is *sustained* when, over the measurement window:
  - the broker receives >= 98 % of the expected devices/interval messages per second,
  - the simulator's event loop lag stays below 0.5 s at the 99th percentile,
  - no device is disconnected and no message was dropped from a device queue.

Usage:
  python bench/fleet.py                       # both profiles (10 s and 1 s interval)
  python bench/fleet.py --interval 1 --sizes 500,1000,2000 --measure 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from iotp.netutil import free_port
from iotp.simulator import Fleet
from iotp.simulator.fleet import raise_fd_limit

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
PROFILES = {10.0: [10000, 12500, 15000, 19000], 1.0: [1000, 1500, 2000, 3000]}
RATE_OK = 0.98
LAG_OK_S = 0.5
WARMUP_S = 10.0
CONNECT_RATE = 500.0
LAG_PROBE_S = 0.05
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 1000000
max_inflight_messages 0
log_dest none
"""


@dataclass
class Result:
    devices: int
    interval: float
    expected_rate: float
    received_rate: float
    lag_p99_s: float
    lag_max_s: float
    connected: int
    dropped: int
    unacked_end: int
    connect_s: float
    cpu_sim_pct: float
    load_avg_1m: float
    sustained: bool


@contextlib.contextmanager
def mosquitto() -> object:
    workdir = Path(tempfile.mkdtemp(prefix="iotp-bench-"))
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port))
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


async def count_messages(port: int, seconds: float) -> int:
    """Messages on devices/+/data seen by an independent subscriber process during
    `seconds` (counted outside this event loop, so a lagging simulator cannot hide)."""
    proc = await asyncio.create_subprocess_shell(
        f"{MOSQUITTO_SUB} -h 127.0.0.1 -p {port} -t 'devices/+/data' -q 0 -F x"
        f" -W {int(seconds)} | wc -l",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return int(out.decode().strip() or 0)


async def probe_lag(samples: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(LAG_PROBE_S)
        samples.append(loop.time() - start - LAG_PROBE_S)


async def run_one(port: int, devices: int, interval: float, measure: float) -> Result:
    fleet = Fleet(
        devices=devices,
        broker_url=f"mqtt://127.0.0.1:{port}",
        interval=interval,
        seed=1,
        id_prefix="BENCH",
        connect_rate=CONNECT_RATE,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    began = time.monotonic()
    task = asyncio.create_task(fleet.run(stop=stop, ready=ready))
    try:
        try:
            await asyncio.wait_for(ready.wait(), devices / 40 + 60)
        except TimeoutError:
            stats = fleet.stats()
            return Result(
                devices=devices,
                interval=interval,
                expected_rate=devices / interval,
                received_rate=0.0,
                lag_p99_s=-1.0,
                lag_max_s=-1.0,
                connected=stats["connected"],
                dropped=stats["dropped"],
                unacked_end=stats["unacked"],
                connect_s=round(time.monotonic() - began, 1),
                cpu_sim_pct=-1.0,
                load_avg_1m=os.getloadavg()[0],
                sustained=False,
            )
        connect_s = time.monotonic() - began
        await asyncio.sleep(WARMUP_S)
        lag: list[float] = []
        lag_stop = asyncio.Event()
        prober = asyncio.create_task(probe_lag(lag, lag_stop))
        cpu0 = time.process_time()
        t0 = time.monotonic()
        received = await count_messages(port, int(measure))
        cpu = (time.process_time() - cpu0) / (time.monotonic() - t0) * 100
        lag_stop.set()
        await prober
        stats = fleet.stats()
    finally:
        stop.set()
        await task
    lag.sort()
    p99 = lag[int(len(lag) * 0.99) - 1] if lag else 0.0
    expected = devices / interval
    rate = received / int(measure)
    sustained = (
        rate >= RATE_OK * expected
        and p99 <= LAG_OK_S
        and stats["connected"] == devices
        and stats["dropped"] == 0
    )
    return Result(
        devices=devices,
        interval=interval,
        expected_rate=round(expected, 1),
        received_rate=round(rate, 1),
        lag_p99_s=round(p99, 3),
        lag_max_s=round(max(lag, default=0.0), 3),
        connected=stats["connected"],
        dropped=stats["dropped"],
        unacked_end=stats["unacked"],
        connect_s=round(connect_s, 1),
        cpu_sim_pct=round(cpu, 1),
        load_avg_1m=os.getloadavg()[0],
        sustained=sustained,
    )


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mosq = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "mosquitto": (mosq.stdout or mosq.stderr).splitlines()[0],
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, help="one profile only")
    parser.add_argument("--sizes", help="comma-separated fleet sizes")
    parser.add_argument("--measure", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    raise_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    profiles = dict(PROFILES)
    if args.interval is not None:
        profiles = {args.interval: PROFILES.get(args.interval, [100, 500, 1000])}
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
        profiles = dict.fromkeys(profiles, sizes)
    info = machine_info()
    info["loop"] = args.loop
    print(json.dumps(info))
    results: list[Result] = []
    for interval, sizes in profiles.items():
        for devices in sizes:
            with mosquitto() as port:
                res = await run_one(port, devices, interval, args.measure)
            results.append(res)
            print(json.dumps(asdict(res)), flush=True)
            if not res.sustained:
                break
    for interval in profiles:
        ok = [r.devices for r in results if r.interval == interval and r.sustained]
        print(f"interval {interval:g}s: largest sustained fleet {max(ok, default=0)} devices")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "results": [asdict(r) for r in results]}, indent=1)
        )


if __name__ == "__main__":
    if "--loop" in sys.argv and "uvloop" in sys.argv:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
