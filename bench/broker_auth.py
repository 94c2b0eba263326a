"""What one device approval and one revocation cost on Debian's Mosquitto 2.0 with many
device accounts: password_file + acl_file reloaded with SIGHUP, against the dynamic
security plugin (accounts changed over $CONTROL/dynamic-security/v1).

Usage:
    python bench/broker_auth.py [--accounts 15000] [--connected 200]

For each scheme: a broker with ``--accounts`` device accounts, ``--connected`` of them
connected, and an observer that publishes QoS 1 to itself in a loop (its slowest round
trip during a change is the broker's stall). Approval: from the change to the new
device's accepted CONNECT. Revocation: from the change to the victim's disconnect.
Prints one JSON line per scheme (recorded in bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import platform
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

from iotp.broker.mosquitto import render_acl
from iotp.services.auth import MQTT_HASH_ITERATIONS, hash_mqtt_secret

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DYNSEC = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
DEVICE_KINDS = ("data", "status", "info", "state", "ack")
CONTROL = "$CONTROL/dynamic-security/v1"
ADMIN = ("bench-admin", "bench-admin-password")
# Publishes and reads bench/ping (the service account of the password-file ACL).
OBSERVER = ("bench-service", "bench-service-password")
DYNSEC_ITERATIONS = 101


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def device_ids(n: int) -> list[str]:
    return [f"BENCH{i:07d}" for i in range(n)]


# ---- the two schemes ---------------------------------------------------------------


class PasswordFile:
    name = "password_file"

    iterations = MQTT_HASH_ITERATIONS

    def __init__(self, workdir: Path, port: int, passwords: dict[str, str]) -> None:
        self.workdir = workdir
        self.passwd = workdir / "passwd"
        self.hashes = {u: hash_mqtt_secret(p, self.iterations) for u, p in passwords.items()}
        self.filler = hash_mqtt_secret("not-connected", self.iterations)
        self.accounts: dict[str, str] = {}
        (workdir / "acl").write_text(render_acl("bench-service"))
        self.conf = (
            "per_listener_settings true\n"
            f"listener {port} 127.0.0.1\n"
            "use_username_as_clientid true\n"
            "allow_anonymous false\n"
            f"password_file {self.passwd}\n"
            f"acl_file {workdir / 'acl'}\n"
        )
        self.pid = 0

    def seed(self, ids: list[str]) -> None:
        self.accounts = {i: self.hashes.get(i, self.filler) for i in ids}
        self.accounts[OBSERVER[0]] = hash_mqtt_secret(OBSERVER[1])
        self._write()

    def _write(self) -> None:
        tmp = self.passwd.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}:{h}\n" for u, h in self.accounts.items()))
        os.replace(tmp, self.passwd)

    async def approve(self, device_id: str) -> None:
        self.accounts[device_id] = self.hashes[device_id]
        self._write()
        os.kill(self.pid, signal.SIGHUP)

    async def revoke(self, device_id: str) -> None:
        del self.accounts[device_id]
        self._write()
        os.kill(self.pid, signal.SIGHUP)


class Dynsec:
    name = "dynamic_security"

    def __init__(self, workdir: Path, port: int, passwords: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = port
        self.json = workdir / "dynsec.json"
        self.passwords = passwords
        self.conf = (
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"plugin {DYNSEC}\n"
            f"plugin_opt_config_file {self.json}\n"
        )
        self.admin: Any = None
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()
        self.pid = 0

    @staticmethod
    def _hash(password: str) -> dict[str, Any]:
        salt = secrets.token_bytes(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, DYNSEC_ITERATIONS)
        return {
            "password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(),
            "iterations": DYNSEC_ITERATIONS,
        }

    @staticmethod
    def role(device_id: str) -> dict[str, Any]:
        # Mosquitto 2.0's dynamic security has no %u/%c patterns: one role per device.
        acls = [
            {"acltype": "publishClientSend", "topic": f"devices/{device_id}/{k}", "allow": True}
            for k in DEVICE_KINDS
        ]
        topic = f"devices/{device_id}/commands"
        acls += [
            {"acltype": "publishClientReceive", "topic": topic, "allow": True},
            {"acltype": "subscribePattern", "topic": topic, "allow": True},
        ]
        return {"rolename": f"device-{device_id}", "acls": acls}

    def client(self, device_id: str) -> dict[str, Any]:
        return {
            "username": device_id,
            "clientid": device_id,
            "roles": [{"rolename": f"device-{device_id}"}],
            **self._hash(self.passwords.get(device_id, "not-connected")),
        }

    def seed(self, ids: list[str]) -> None:
        admin_acls = [
            {"acltype": t, "topic": topic, "allow": True}
            for t in ("publishClientSend", "publishClientReceive", "subscribePattern")
            for topic in (f"{CONTROL}/#", "bench/#")
        ]
        filler = self._hash("not-connected")
        clients = [
            {"username": i, "clientid": i, "roles": [{"rolename": f"device-{i}"}], **filler}
            if i not in self.passwords
            else self.client(i)
            for i in ids
        ]
        clients.append(
            {"username": ADMIN[0], "roles": [{"rolename": "admin"}], **self._hash(ADMIN[1])}
        )
        clients.append(
            {"username": OBSERVER[0], "roles": [{"rolename": "admin"}], **self._hash(OBSERVER[1])}
        )
        config = {
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": True,
                "subscribe": False,
                "unsubscribe": True,
            },
            "clients": clients,
            "groups": [],
            "roles": [self.role(i) for i in ids] + [{"rolename": "admin", "acls": admin_acls}],
        }
        self.json.write_text(json.dumps(config))

    async def connect_admin(self) -> None:
        self.admin = gmqtt.Client(f"bench-admin-{uuid.uuid4().hex[:6]}")
        self.admin.set_auth_credentials(*ADMIN)
        self.admin.on_message = lambda c, t, p, q, pr: self.answers.put_nowait(p) or 0
        await self.admin.connect("127.0.0.1", self.port, version=MQTTv311)
        self.admin.subscribe(f"{CONTROL}/response", qos=1)
        await asyncio.sleep(0.2)

    async def _command(self, *commands: dict[str, Any]) -> None:
        self.admin.publish(CONTROL, json.dumps({"commands": list(commands)}), qos=1)
        answer = json.loads(await asyncio.wait_for(self.answers.get(), 30))
        errors = [r["error"] for r in answer["responses"] if r.get("error")]
        if errors:
            raise RuntimeError(f"dynsec refused: {errors}")

    async def approve(self, device_id: str) -> None:
        role = self.role(device_id)
        await self._command(
            {"command": "createRole", **role},
            {
                "command": "createClient",
                "username": device_id,
                "password": self.passwords[device_id],  # the command hashes it
                "clientid": device_id,
                "roles": [{"rolename": role["rolename"]}],
            },
        )

    async def revoke(self, device_id: str) -> None:
        await self._command({"command": "deleteClient", "username": device_id})


# ---- measurement -------------------------------------------------------------------


async def connect(port: int, user: str, password: str) -> Any:
    client = gmqtt.Client(user, clean_session=True)
    client.set_config({"reconnect_retries": 0})
    client.set_auth_credentials(user, password)
    await client.connect("127.0.0.1", port, version=MQTTv311, keepalive=60)
    return client


class Observer:
    """Publishes QoS 1 to its own topic, one at a time; remembers each round trip."""

    def __init__(self, client: Any, topic: str) -> None:
        self.client = client
        self.topic = topic
        self.rtts: list[tuple[float, float]] = []  # (sent at, round trip)
        self.got = asyncio.Event()
        client.on_message = self._on_message

    def _on_message(self, *args: Any) -> int:
        self.got.set()
        return 0

    async def run(self, stop: asyncio.Event) -> None:
        self.client.subscribe(self.topic, qos=1)
        await asyncio.sleep(0.2)
        while not stop.is_set():
            self.got.clear()
            sent = time.perf_counter()
            self.client.publish(self.topic, b"x", qos=1)
            await asyncio.wait_for(self.got.wait(), 30)
            self.rtts.append((sent, time.perf_counter() - sent))
            await asyncio.sleep(0.002)

    def stall_since(self, t0: float) -> float:
        return max((rtt for sent, rtt in self.rtts if sent + rtt >= t0), default=0.0)


async def until(probe: Callable[[], Any], timeout: float = 30) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if await probe():
            return time.perf_counter() - t0
        await asyncio.sleep(0.005)
    raise TimeoutError("condition not met")


async def measure(scheme_cls: Any, accounts: int, connected: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="iotp-bench-auth-"))
    port = free_port()
    ids = device_ids(accounts + 1)
    newcomer, known = ids[-1], ids[:-1]
    online = known[:connected]
    passwords = {i: f"secret-{i}-{secrets.token_hex(4)}" for i in [*online, newcomer]}
    scheme = scheme_cls(workdir, port, passwords)
    t = time.perf_counter()
    scheme.seed(known)
    seed_s = time.perf_counter() - t
    # Run as root, Mosquitto drops to user "mosquitto" unless told to stay this user.
    user = pwd.getpwuid(os.getuid()).pw_name
    (workdir / "mosquitto.conf").write_text(f"user {user}\n{scheme.conf}log_dest none\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")])
    scheme.pid = proc.pid
    result: dict[str, Any] = {
        "scheme": scheme.name,
        "hash_iterations": getattr(scheme, "iterations", DYNSEC_ITERATIONS),
        "accounts": accounts,
        "connected": connected,
    }
    try:
        t = time.perf_counter()
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.02)
        result["start_s"] = round(time.perf_counter() - t, 3)
        result["seed_files_s"] = round(seed_s, 3)
        if isinstance(scheme, Dynsec):
            await scheme.connect_admin()
        clients = [await connect(port, i, passwords[i]) for i in online]
        observer = Observer(await connect(port, *OBSERVER), "bench/ping")
        stop = asyncio.Event()
        pinger = asyncio.create_task(observer.run(stop))
        await asyncio.sleep(0.5)

        t0 = time.perf_counter()
        await scheme.approve(newcomer)
        applied = time.perf_counter() - t0

        async def newcomer_in() -> bool:
            try:
                client = await connect(port, newcomer, passwords[newcomer])
            except Exception:
                return False
            await client.disconnect()
            return True

        await until(newcomer_in)
        result["approve_s"] = round(time.perf_counter() - t0, 4)
        result["approve_call_s"] = round(applied, 4)
        await asyncio.sleep(0.3)
        result["approve_stall_s"] = round(observer.stall_since(t0), 4)

        victim_id = online[-1]
        victim = clients[-1]
        gone = asyncio.Event()
        victim.on_disconnect = lambda *a: gone.set()
        t0 = time.perf_counter()
        await scheme.revoke(victim_id)
        try:
            await asyncio.wait_for(gone.wait(), 10)
            result["revoke_disconnect_s"] = round(time.perf_counter() - t0, 4)
        except TimeoutError:
            result["revoke_disconnect_s"] = None  # still connected after 10 s
        await asyncio.sleep(0.3)
        result["revoke_stall_s"] = round(observer.stall_since(t0), 4)
        rtts = sorted(r for _, r in observer.rtts)
        result["median_rtt_ms"] = round(1000 * rtts[len(rtts) // 2], 3)
        stop.set()
        pinger.cancel()
        with contextlib.suppress(BaseException):
            await pinger
        for client in [observer.client, *clients[:-1]]:
            with contextlib.suppress(Exception):
                await client.disconnect()
        result["files_bytes"] = sum(p.stat().st_size for p in workdir.iterdir() if p.is_file())
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


async def main() -> None:
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=15_000)
    parser.add_argument("--connected", type=int, default=200)
    parser.add_argument(
        "--iterations",
        type=int,
        default=MQTT_HASH_ITERATIONS,
        help="PBKDF2 iterations of the password file's hashes (Mosquitto re-checks every"
        " connected client's password on reload)",
    )
    parser.add_argument("--schemes", default="password_file,dynamic_security")
    args = parser.parse_args()
    PasswordFile.iterations = args.iterations
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "load": os.getloadavg()[0],
            }
        )
    )
    for scheme in (PasswordFile, Dynsec):
        if scheme.name not in args.schemes.split(","):
            continue
        print(json.dumps(await measure(scheme, args.accounts, args.connected)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
