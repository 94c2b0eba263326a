"""OTA end to end in the simulator: HTTP download, SHA-256, staging, reboot into the
new version, and rollback when the new version cannot reach the broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.firmware.fwlink import Commander, fw, next_message, run_broker, running_fleet


@pytest.fixture
async def file_server() -> AsyncIterator[tuple[dict[str, bytes], int]]:
    files: dict[str, bytes] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.decode().split(" ")[1]
        body = files.get(path)
        if body is None:
            writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield files, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def bundle(version: str) -> bytes:
    data: bytes = fw("bundle").build(
        version,
        [
            ("iotfw/__init__.py", f'VERSION = "{version}"\n'.encode()),
            ("iotfw/extra.py", b"# " + b"x" * 20000 + b"\n"),
        ],
    )
    return data


async def test_ota_update_rollback_and_hash_mismatch(
    file_server: tuple[dict[str, bytes], int],
) -> None:
    files, port = file_server
    good, broken = bundle("1.1.0"), bundle("1.2.0-broken")
    files["/fw-1.1.0.bin"] = good
    files["/fw-1.2.0.bin"] = broken
    async with (
        run_broker("amqtt") as broker,
        running_fleet(broker.url, interval=1, config={"ota_confirm_timeout": 10}) as fleet,
    ):
        sim = fleet.devices[0]
        observer = await broker.observer()
        await observer.subscribe(f"devices/{sim.node_id}/#")
        await asyncio.sleep(0.3)
        cmd = Commander(observer, sim.node_id)
        try:
            # a wrong hash: refused, the old version keeps running
            ack = await cmd.send(
                "ota",
                {
                    "url": f"http://127.0.0.1:{port}/fw-1.1.0.bin",
                    "sha256": "0" * 64,
                    "version": "1.1.0",
                },
            )
            assert ack["status"] == "error"
            assert ack["error"] == "sha256 mismatch"
            assert sim.boots == 1
            # a missing file
            ack = await cmd.send(
                "ota", {"url": f"http://127.0.0.1:{port}/nope", "sha256": "0" * 64, "version": "9"}
            )
            assert ack["status"] == "error"
            assert "404" in ack["error"]

            # a good update: progress, reboot, final ok from the new version
            ack = await cmd.send(
                "ota",
                {
                    "url": f"http://127.0.0.1:{port}/fw-1.1.0.bin",
                    "sha256": hashlib.sha256(good).hexdigest(),
                    "version": "1.1.0",
                    "size": len(good),
                },
                final=False,
            )
            stages = [ack["result"]["stage"]]
            while True:
                ack = await cmd.send_next(ack["id"], timeout=15)
                if ack["status"] != "progress":
                    break
                stages.append(ack["result"]["stage"])
            assert ack == {"id": ack["id"], "status": "ok", "result": {"version": "1.1.0"}}
            assert stages[0] == "downloading"
            assert stages[-1] == "rebooting"
            assert "verifying" in stages
            assert "installing" in stages
            info = json.loads(
                await next_message(observer, cmd.topic("info"), match=lambda p: b'"1.1.0"' in p)
            )
            assert info["firmware"] == "1.1.0"
            assert sim.boots == 2
            assert sim.version == "1.1.0"

            # a version that never reaches the broker is rolled back
            ack = await cmd.send(
                "ota",
                {
                    "url": f"http://127.0.0.1:{port}/fw-1.2.0.bin",
                    "sha256": hashlib.sha256(broken).hexdigest(),
                    "version": "1.2.0-broken",
                },
                timeout=30,
            )
            assert ack["status"] == "error"
            assert ack["error"] == "rolled_back"
            assert sim.version == "1.1.0"
            assert sim.boots == 4
            assert sim.reasons == ["ota", "ota", "rollback"]
        finally:
            await observer.close()
