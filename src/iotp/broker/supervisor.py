"""`iotp serve`'s own Mosquitto: configured in ``<data dir>/mosquitto/``, started,
restarted if it dies, stopped with the platform (docs/operations.md#the-supervised-broker).

Two listeners:

- the device listener (``--mqtt-host``/``--mqtt-port``): devices and provisioning. In
  secure mode every client needs an account, and a client's id is its username
  (``use_username_as_clientid``), so nobody can connect as a device without its secret,
  and a provisioning connection (``provision``) can never take a device's client id.
- the platform listener (127.0.0.1, a port of its own): only the platform's processes,
  each with its own account (``Settings.mqtt_service_accounts``).

Accounts live in password and ACL files written from the database
(``iotp.broker.mosquitto.MosquittoSync``) and reloaded with SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import shutil
import signal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from iotp.broker.mosquitto import HEADER, MosquittoSync, write_atomically
from iotp.errors import ConfigurationError
from iotp.netutil import free_port
from iotp.settings import Settings

log = logging.getLogger(__name__)

DEBIAN_MOSQUITTO = "/usr/sbin/mosquitto"
READY_TIMEOUT_SECONDS = 10.0
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
# Sessions of clients gone longer than this are dropped (devices that were replaced).
SESSION_EXPIRY = "14d"


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return DEBIAN_MOSQUITTO if os.access(DEBIAN_MOSQUITTO, os.X_OK) else None


def render_conf(
    settings: Settings,
    *,
    workdir: Path,
    device_host: str,
    device_port: int,
    platform_port: int,
) -> str:
    """The whole mosquitto.conf. Limits are global in Mosquitto 2.0 (docs/operations.md)."""
    # As root, Mosquitto drops to the user `mosquitto`, which cannot read the data dir.
    user = pwd.getpwuid(os.getuid()).pw_name
    lines = [
        HEADER.rstrip("\n"),
        f"user {user}",
        "per_listener_settings true",
        "persistence true",
        f"persistence_location {workdir}/",
        "autosave_interval 30",
        "set_tcp_nodelay true",
        f"max_packet_size {settings.mqtt_max_packet_bytes}",
        # The worker acknowledges a message once its batch is committed: a whole batch
        # must be in flight (the default, 20, throttles ingest ~100x). Devices are only
        # ever sent their own commands.
        "max_inflight_messages 0",
        f"max_queued_messages {settings.mqtt_max_queued_messages}",
        f"max_queued_bytes {settings.mqtt_max_queued_bytes}",
        f"persistent_client_expiration {SESSION_EXPIRY}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "connection_messages false",
        "log_timestamp false",
        "",
        "# devices and provisioning",
        *_device_listener(settings, workdir, device_host, device_port),
    ]
    if settings.tls_cert_file and settings.tls_key_file:
        lines += [
            "",
            "# devices over TLS",
            *_device_listener(settings, workdir, device_host, settings.mqtt_tls_port),
            f"certfile {settings.tls_cert_file.resolve()}",
            f"keyfile {settings.tls_key_file.resolve()}",
        ]
    lines += [
        "",
        "# the platform's own processes",
        f"listener {platform_port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {workdir / 'passwd-platform'}",
        f"acl_file {workdir / 'acl-platform'}",
    ]
    return "\n".join(lines) + "\n"


def _device_listener(settings: Settings, workdir: Path, host: str, port: int) -> list[str]:
    lines = [f"listener {port} {host}"]
    if not settings.secure:
        return [*lines, "allow_anonymous true"]
    return [
        *lines,
        "allow_anonymous false",
        "use_username_as_clientid true",
        f"password_file {workdir / 'passwd-devices'}",
        f"acl_file {workdir / 'acl-devices'}",
    ]


class SupervisedMosquitto:
    """Mosquitto as a child process of the platform."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        *,
        host: str,
        port: int,
        binary: str,
        platform_port: int = 0,
    ) -> None:
        self.settings = settings
        self.binary = binary
        self.host = host
        self.port = port
        self.platform_port = platform_port or free_port()
        self.workdir = (settings.data_dir / "mosquitto").resolve()
        self.conf = self.workdir / "mosquitto.conf"
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.url = f"mqtt://{connect_host}:{port}"  # devices
        self.platform_url = f"mqtt://127.0.0.1:{self.platform_port}"
        self.tls_url: str | None = None
        if settings.tls_cert_file and settings.tls_key_file:
            self.tls_url = f"mqtts://{connect_host}:{settings.mqtt_tls_port}"
        self.sync = MosquittoSync(
            settings,
            engine,
            password_file=self.workdir / "passwd-devices",
            acl_file=self.workdir / "acl-devices",
            platform_files=(self.workdir / "passwd-platform", self.workdir / "acl-platform"),
            pid=lambda: self.pid,
        )
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_lines: list[str] = []

    @property
    def pid(self) -> int | None:
        """The running broker's process id."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.sync.write_platform_files()
        await self.sync.sync(reload=False)
        write_atomically(
            self.conf,
            render_conf(
                self.settings,
                workdir=self.workdir,
                device_host=self.host,
                device_port=self.port,
                platform_port=self.platform_port,
            ),
            mode=0o600,
        )
        await self._spawn()
        self._tasks = [
            asyncio.create_task(self._supervise(), name="mosquitto-supervisor"),
            asyncio.create_task(self.sync.run(), name="mosquitto-accounts"),
        ]
        log.info("mosquitto (pid %s) for devices on %s:%d", self.pid, self.host, self.port)

    async def _spawn(self) -> None:
        self._last_lines = []
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(self.conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Its own session: Ctrl-C in the terminal reaches the platform, which stops
            # the broker last (after its clients); the kernel ends it should the
            # platform die without stopping it.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._tasks.append(asyncio.create_task(self._forward_log(self._proc)))
        await self._wait_ready(self._proc)

    async def _forward_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._last_lines = [*self._last_lines[-9:], line]
            log.log(logging.WARNING if "Error" in line else logging.INFO, "mosquitto: %s", line)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        device_host = self.url.rsplit("//", 1)[1].rsplit(":", 1)[0]
        ports = [("127.0.0.1", self.platform_port), (device_host, self.port)]
        while True:
            if proc.returncode is not None or loop.time() > deadline:
                await asyncio.sleep(0.1)  # let the last log lines arrive
                detail = "; ".join(self._last_lines) or f"exit code {proc.returncode}"
                raise ConfigurationError(f"mosquitto did not start ({self.conf}): {detail}")
            if all([await _port_open(host, port) for host, port in ports]):
                return
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        delay = RESTART_DELAY_SECONDS
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("mosquitto exited (code %s): restarting in %.0f s", code, delay)
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                delay = RESTART_DELAY_SECONDS
            except ConfigurationError as exc:
                log.error("%s", exc)
                delay = min(delay * 2, RESTART_DELAY_MAX_SECONDS)

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the platform's process ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
