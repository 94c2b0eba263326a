"""?wait=true answered from the device's own ack: which acks may end a wait."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from iotp.api.waiters import ACK_DEADLINE_MARGIN_SECONDS, CommandWaiters
from iotp.services.times import iso_time

NOW = 1_800_000_000.0


def command(cid: str = "c1", device: str = "ESP32-AAAAAA", timeout: float = 10.0) -> dict[str, Any]:
    return {
        "id": cid,
        "device_id": device,
        "command": "relay",
        "params": {"name": "light", "state": "on"},
        "status": "sending",
        "timeout": timeout,
        "created_at": iso_time(NOW),  # as services.commands.to_dict shows it
        "sent_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
    }


def ack(cid: str | None = "c1", status: str = "ok", **extra: Any) -> bytes:
    return orjson.dumps({"id": cid, "status": status, **extra})


async def test_ok_ack_ends_the_wait_with_the_devices_word() -> None:
    waiters = CommandWaiters()
    futures = waiters.watch({"c1": command()})
    assert waiters.feed_ack("ESP32-AAAAAA", ack(result={"light": "on"}), now=NOW + 0.02)
    got = futures["c1"].result()
    assert got["status"] == "acked"
    assert got["result"] == {"light": "on"}
    assert got["finished_at"] == iso_time(NOW + 0.02)
    assert got["sent_at"] == iso_time(NOW + 0.02)  # delivered, as the ack proves
    assert got["params"] == {"name": "light", "state": "on"}


async def test_error_ack_fails_the_command_with_the_devices_reason() -> None:
    waiters = CommandWaiters()
    futures = waiters.watch({"c1": command()})
    assert waiters.feed_ack("ESP32-AAAAAA", ack(status="error", error="no such relay"), now=NOW)
    assert futures["c1"].result()["status"] == "failed"
    assert futures["c1"].result()["error"] == "no such relay"
    waiters2 = CommandWaiters()
    futures2 = waiters2.watch({"c1": command()})
    assert waiters2.feed_ack("ESP32-AAAAAA", ack(status="error"), now=NOW)
    assert futures2["c1"].result()["error"] == "device reported an error"


@pytest.mark.parametrize(
    ("device", "payload", "why"),
    [
        ("ESP32-BBBBBB", ack(), "another device cannot answer it"),
        ("ESP32-AAAAAA", ack(status="progress", result={"pct": 40}), "progress is not the end"),
        ("ESP32-AAAAAA", ack(cid="other"), "not a command waited on"),
        ("ESP32-AAAAAA", ack(cid=None), "no id"),
        ("ESP32-AAAAAA", b"{not json", "bad json"),
        ("ESP32-AAAAAA", b'{"id": "c1", "status": "maybe"}', "bad status"),
        ("ESP32-AAAAAA", b"[1, 2]", "not an object"),
    ],
)
async def test_acks_that_do_not_end_the_wait(device: str, payload: bytes, why: str) -> None:
    waiters = CommandWaiters()
    futures = waiters.watch({"c1": command()})
    assert not waiters.feed_ack(device, payload, now=NOW + 0.1), why
    assert not futures["c1"].done(), why


async def test_an_ack_near_the_timeout_is_left_to_the_worker() -> None:
    waiters = CommandWaiters()
    futures = waiters.watch({"c1": command(timeout=5.0)})
    late = NOW + 5.0 - ACK_DEADLINE_MARGIN_SECONDS + 0.01
    assert not waiters.feed_ack("ESP32-AAAAAA", ack(), now=late)
    assert not futures["c1"].done()
    # ...and the worker's event still ends it, whatever it decided
    event = orjson.dumps(
        {"type": "command_update", "payload": {**command(), "status": "timed_out"}}
    )
    waiters.feed(event)
    assert futures["c1"].result()["status"] == "timed_out"


async def test_the_first_answer_wins_and_forget_cancels() -> None:
    waiters = CommandWaiters()
    futures = waiters.watch({"c1": command(), "c2": command("c2")})
    event = orjson.dumps({"type": "command_update", "payload": {**command(), "status": "acked"}})
    waiters.feed(event)
    assert not waiters.feed_ack("ESP32-AAAAAA", ack(status="error"), now=NOW)  # already ended
    assert futures["c1"].result()["status"] == "acked"
    waiters.forget(futures)
    assert futures["c2"].cancelled()
    assert len(waiters) == 0
    assert not waiters.feed_ack("ESP32-AAAAAA", ack(cid="c2"), now=NOW)


async def test_nothing_is_parsed_while_nobody_waits() -> None:
    waiters = CommandWaiters()
    assert not waiters.feed_ack("ESP32-AAAAAA", b"\xff garbage", now=NOW)
    await asyncio.sleep(0)


async def test_the_early_answer_is_the_ending_the_worker_records() -> None:
    """A device echoing a secret it was sent: the wait's answer shows it redacted, as the
    recorded command does (both take the ending from services.commands.ack_ending)."""
    waiters = CommandWaiters()
    futures = waiters.watch({"c1": command()})
    echoed = {"wifi_password": "hunter22", "applied": True}
    assert waiters.feed_ack("ESP32-AAAAAA", ack(result=echoed), now=NOW + 0.02)
    assert futures["c1"].result()["result"] == {"wifi_password": "[secret]", "applied": True}
