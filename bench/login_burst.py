"""Ingest during a burst of sign-ins, in the shape of `iotp serve`: broker, worker and API
share one process and one event loop (tests/support.py run_stack composes them the same
way), on SQLite. Argon2 verification runs in a capped thread pool, so sign-ins must not
stall ingest. Devices connect in open mode on purpose (the broker's accounts are measured
by bench/broker_auth.py).

Two phases of the same run, the same messages each: ingest alone, then ingest while a
separate process signs in (20 at a time). The second phase starts once the burst has
started and must end before it does (the run fails otherwise: lower --messages), so every
message of it is stored under the burst. Reported: the stored rate of each and their
ratio (target: >= 0.8).

The defaults take about a minute on a loaded 2-core machine (one Argon2 verification
costs 0.1-0.6 s there, and they run one at a time); the 200 sign-ins of the target:

    python bench/login_burst.py --logins 200
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import _harness as h  # noqa: E402

from tests.support import OPEN, TEST_ADMIN_PASSWORD, Stack, run_stack  # noqa: E402


def publisher(url: str, messages: int, devices: int, offset: int) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio, sys; sys.path.insert(0, 'bench'); import _harness as h; "
        f"asyncio.run(h.raw_publish({url!r}, devices={devices}, messages={messages}, "
        f"seq_offset={offset}))"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


async def sign_ins(api_url: str, count: int, concurrency: int) -> float:
    """In its own process's loop (this function runs under ``--sign-ins``)."""
    slots = asyncio.Semaphore(concurrency)
    form = {"username": "admin", "password": TEST_ADMIN_PASSWORD}

    async def one(http: httpx.AsyncClient) -> None:
        async with slots:
            (await http.post("/api/auth/token", data=form)).raise_for_status()

    started = time.monotonic()
    # No client timeout: on a busy machine 200 Argon2 verifications in turn take minutes,
    # and the burst is meant to be served, however long, not cut short.
    async with httpx.AsyncClient(base_url=api_url, timeout=None) as http:
        requests = [asyncio.ensure_future(one(http)) for _ in range(count)]
        print("started", flush=True)  # the parent starts its measured phase now
        await asyncio.gather(*requests)
    return time.monotonic() - started


async def stored(stack: Stack) -> int:
    count: int = (await stack.get("/api/stats"))["messages_stored"]
    return count


async def phase(stack: Stack, messages: int, devices: int, offset: int) -> float:
    """Messages stored per second, from the first publish to the last row stored."""
    before = await stored(stack)
    started = time.monotonic()
    proc = publisher(stack.mqtt_url, messages, devices, offset)
    while await stored(stack) < before + messages:
        if time.monotonic() - started > 600:
            raise RuntimeError("ingest did not finish")
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    proc.wait(60)
    return messages / elapsed


async def run(messages: int, devices: int, logins: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="iotp-bench-") as tmp:
        async with run_stack(
            "embedded-sqlite", Path(tmp), mode=OPEN, login_max_failures=1000
        ) as stack:
            await phase(stack, messages // 10, devices, 0)  # warm-up
            alone = await phase(stack, messages, devices, messages)
            burst = subprocess.Popen(
                [sys.executable, __file__, "--sign-ins", stack.api_url, "--logins", str(logins)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
            )
            assert burst.stdout is not None
            first = await asyncio.to_thread(burst.stdout.readline)
            if first.strip() != b"started":
                raise RuntimeError(f"the sign-in burst did not start: {first!r}")
            during = await phase(stack, messages, devices, 2 * messages)
            if burst.poll() is not None:
                raise RuntimeError(
                    "the sign-in burst ended before the measured phase did: "
                    "lower --messages or raise --logins"
                )
            burst_out, _ = await asyncio.to_thread(burst.communicate, timeout=1800)
            if burst.returncode != 0:
                raise RuntimeError("the sign-in burst failed")
            burst_s = float(burst_out.decode().strip())
    return {"alone": alone, "during": during, "ratio": during / alone, "burst_s": burst_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--sign-ins", metavar="API_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sign_ins:
        print(asyncio.run(sign_ins(args.sign_ins, args.logins, 20)))
        return
    print(h.machine())
    r = asyncio.run(run(args.messages, args.devices, args.logins))
    print(
        f"ingest alone {r['alone']:,.0f} msg/s; during {args.logins} sign-ins "
        f"{r['during']:,.0f} msg/s; ratio {r['ratio']:.2f} (target >= 0.8); "
        f"the burst took {r['burst_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
