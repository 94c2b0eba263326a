"""compose.yaml (repository root) and deploy/: the compose file validated by
docker-compose itself (no Docker engine runs here), its secrets generator run for real,
and the broker configs checked by the real brokers where we can run them: Mosquitto with
compose's own config refuses anonymous clients and packets over the limit."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotp.broker.mosquitto import render_device_acl
from iotp.netutil import free_port
from iotp.services.auth import hash_mqtt_secret
from iotp.settings import DEFAULT_MAX_PACKET_BYTES, Settings
from tests.integration.test_broker_acl import Client, Refused
from tests.support import MOSQUITTO, need

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "compose.yaml"
SERVICES = {"postgres", "mosquitto", "rabbitmq", "api", "worker", "web"}
PLATFORM = ("migrate", "api", "worker", "mosquitto-sync", "worker-rabbitmq", "rabbitmq-sync")


def compose_config(*profiles: str) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    need(exe is not None, "docker-compose (Debian package docker-compose)")
    assert exe is not None
    args = [exe]
    for p in profiles:
        args += ["--profile", p]
    # from the repository root, with nothing set: no variable is required
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTP_", "POSTGRES_"))}
    out = subprocess.run(
        [*args, "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def test_compose_is_valid_and_has_every_service() -> None:
    config = compose_config("rabbitmq")
    services = config["services"]
    assert set(services) >= SERVICES | {
        "secrets",
        "migrate",
        "mosquitto-sync",
        "worker-rabbitmq",
        "rabbitmq-sync",
    }
    for name in SERVICES | {"migrate"}:
        assert "healthcheck" in services[name] or name == "migrate", name


def test_default_profile_runs_mosquitto_not_rabbitmq() -> None:
    services = compose_config()["services"]
    # docker-compose 1.x lists every service in `config`; profiles decide what starts.
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services["worker-rabbitmq"]["profiles"] == ["rabbitmq"]
    assert "rabbitmq" in services["rabbitmq-sync"]["profiles"]  # accounts with the broker
    for name in SERVICES - {"rabbitmq"} | {"secrets", "mosquitto-sync"}:
        assert "profiles" not in services[name], name


def test_migrations_run_before_api_and_worker() -> None:
    services = compose_config()["services"]
    assert services["migrate"]["command"] == ["iotp", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["mosquitto"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_replicas_and_shared_subscriptions() -> None:
    services = compose_config()["services"]
    assert int(services["api"]["deploy"]["replicas"]) >= 2
    assert int(services["worker"]["deploy"]["replicas"]) >= 2
    env = services["worker"]["environment"]
    assert env["IOTP_MQTT_SHARE_GROUP"]
    assert env["IOTP_METRICS_PORT"] == "9100"
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["IOTP_MQTT_URL"] == "mqtt://mosquitto:1884"  # the platform's listener
        _settings(env)


def _settings(env: dict[str, str]) -> Settings:
    """Every value the platform reads must be a valid setting (with generated secrets,
    as the `secrets` service writes them)."""
    generated = {
        "secret_key": secrets.token_urlsafe(48),
        "provisioning_secret": secrets.token_urlsafe(24),
        "admin_password": secrets.token_urlsafe(12),
    }
    given = {k[5:].lower(): v for k, v in env.items() if k.startswith("IOTP_") and v}
    return Settings(**{**generated, **given})


def test_secure_by_default_with_secrets_generated_once_and_shared() -> None:
    """Every platform process runs secure and reads the same generated secrets (one
    volume, read-only); PostgreSQL takes its password from there too; Mosquitto has
    no anonymous access and its accounts come from the platform (mosquitto-sync)."""
    services = compose_config("rabbitmq")["services"]
    secrets = services["secrets"]
    assert secrets["restart"] == "no"
    assert any("generate.py" in str(v) for v in secrets["volumes"])
    for name in PLATFORM:
        env = services[name]["environment"]
        assert env["IOTP_SECURE"] == "true", name
        assert env["IOTP_SECRETS_DIR"] == "/run/iotp-secrets", name
        for secret in ("SECRET_KEY", "PROVISIONING_SECRET", "ADMIN_PASSWORD", "DATABASE_URL"):
            assert f"IOTP_{secret}" not in env, (name, secret)  # from the files only
        mounts = [_mount(v) for v in services[name]["volumes"]]
        assert ("iotp-secrets", "/run/iotp-secrets", True) in mounts, name
    postgres = services["postgres"]
    assert (
        postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/iotp-secrets/postgres_password"
    )
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    for name in ("postgres", "mosquitto", "migrate"):
        assert services[name]["depends_on"]["secrets"]["condition"] == (
            "service_completed_successfully"
        )
    lines = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous true" not in lines
    assert lines.count("allow_anonymous false") == 2  # each listener
    assert "use_username_as_clientid true" in lines  # the device listener
    sync = services["mosquitto-sync"]
    for option, line in (
        ("--password-file", "password_file /mosquitto/auth/passwords"),
        ("--acl-file", "acl_file /mosquitto/auth/acl"),
    ):
        assert line in lines
        assert f"{option}={line.split()[1]}" in sync["command"]
    assert "--platform-password-file=/mosquitto/auth/platform-passwords" in sync["command"]
    assert "--platform-acl-file=/mosquitto/auth/platform-acl" in sync["command"]
    mosquitto = services["mosquitto"]
    assert [str(p).split(":")[-1] for p in _ports(mosquitto)] == ["1883"]  # not 1884
    assert ("mosquitto-auth", "/mosquitto/auth", False) in [_mount(v) for v in sync["volumes"]]


def _ports(service: dict[str, Any]) -> list[Any]:
    return [p["target"] if isinstance(p, dict) else p for p in service.get("ports", [])]


def _mount(volume: Any) -> tuple[str, str, bool]:
    if isinstance(volume, dict):
        return volume["source"], volume["target"], bool(volume.get("read_only"))
    source, target, *mode = str(volume).split(":")
    return source, target, mode == ["ro"]


def test_secrets_are_generated_once_and_read_as_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/secrets/generate.py as the `secrets` service runs it (run twice: the
    second run changes nothing), then read back the way every platform process does."""
    env = {
        **os.environ,
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "MOSQUITTO_AUTH_DIR": str(tmp_path / "auth"),
    }
    script = str(DEPLOY / "secrets" / "generate.py")
    first = subprocess.run(
        [sys.executable, script], env=env, capture_output=True, text=True, check=True
    )
    files = {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()}
    assert set(files) == {
        "postgres_password",
        "IOTP_DATABASE_URL",
        "IOTP_SECRET_KEY",
        "IOTP_PROVISIONING_SECRET",
        "IOTP_ADMIN_PASSWORD",
    }
    assert files["IOTP_ADMIN_PASSWORD"] in first.stdout  # shown once, in its log
    assert files["IOTP_PROVISIONING_SECRET"] in first.stdout
    second = subprocess.run(
        [sys.executable, script], env=env, capture_output=True, text=True, check=True
    )
    assert files["IOTP_ADMIN_PASSWORD"] not in second.stdout
    assert {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()} == files
    for path in (tmp_path / "secrets").iterdir():
        assert path.stat().st_mode & 0o777 == 0o440, path
    for name in ("passwords", "acl"):  # Mosquitto starts; nobody can log in yet
        path = tmp_path / "auth" / name
        assert path.read_text() == ""
        assert path.stat().st_mode & 0o777 == 0o600

    from iotp.settings import get_settings

    monkeypatch.setenv("IOTP_SECRETS_DIR", str(tmp_path / "secrets"))
    for name in ("SECRET_KEY", "PROVISIONING_SECRET", "ADMIN_PASSWORD", "DATABASE_URL"):
        monkeypatch.delenv(f"IOTP_{name}", raising=False)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert settings.secret_key.get_secret_value() == files["IOTP_SECRET_KEY"]
    assert settings.provisioning_secret.get_secret_value() == files["IOTP_PROVISIONING_SECRET"]
    assert settings.admin_password.get_secret_value() == files["IOTP_ADMIN_PASSWORD"]
    password = files["postgres_password"]
    assert settings.database_url == f"postgresql://iotp:{password}@postgres:5432/iotp"


def test_rabbitmq_profile_workers_compete_on_one_queue() -> None:
    """On RabbitMQ (no shared subscriptions) the workers consume one AMQP queue; their
    commands and events go over RabbitMQ's MQTT plugin; all of it valid settings."""
    services = compose_config("rabbitmq")["services"]
    w = services["worker-rabbitmq"]
    env = w["environment"]
    assert env["IOTP_WORKER_SOURCE"] == "amqp"
    assert env["IOTP_AMQP_URL"].startswith("amqp://")
    assert "@rabbitmq:5672" in env["IOTP_AMQP_URL"]
    assert env["IOTP_AMQP_QUEUE"]
    assert env["IOTP_MQTT_URL"] == "mqtt://rabbitmq:1883"
    assert not env["IOTP_MQTT_SHARE_GROUP"]  # RabbitMQ has no $share
    assert int(w["deploy"]["replicas"]) >= 2
    assert w["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert w["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "iotp worker" in " ".join(w["command"])
    settings = _settings(env)
    assert settings.worker_source == "amqp"
    assert settings.effective_amqp_prefetch > settings.batch_max_rows  # next batch fills
    sync = services["rabbitmq-sync"]
    assert sync["command"] == ["iotp", "rabbitmq", "sync"]
    assert "@rabbitmq:15672" in sync["environment"]["IOTP_RABBITMQ_MANAGEMENT_URL"]
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins
    assert "rabbitmq_mqtt" in plugins


def test_volumes_keep_data() -> None:
    config = compose_config()
    assert {"pgdata", "mosquitto-data"} <= set(config["volumes"])
    mounts = [str(v) for v in config["services"]["mosquitto"]["volumes"]]
    assert any("/mosquitto/data" in m for m in mounts)


def test_compose_lives_at_the_root_with_its_build_contexts_in_deploy() -> None:
    config = compose_config()
    for name in ("migrate", "api", "worker", "web", "secrets"):
        build = config["services"][name]["build"]
        assert Path(build["context"]) == ROOT, name
        assert (ROOT / build["dockerfile"]).is_file(), name
        assert build["dockerfile"].startswith("deploy/"), name
    assert not (DEPLOY / "compose.yaml").exists()
    example = (ROOT / ".env.example").read_text()
    assert "POSTGRES_PASSWORD" not in example  # generated, never typed
    for line in example.splitlines():
        if line and not line.startswith("#"):
            assert not line.startswith("IOTP_"), line  # `iotp serve` reads .env too


def _conf(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            values[key] = value.strip()
    return values


def test_mosquitto_config_keeps_queued_messages_within_bounds() -> None:
    conf = _conf(DEPLOY / "mosquitto" / "mosquitto.conf")
    assert conf["persistence"] == "true"
    assert 1_000_000 <= int(conf["max_queued_messages"]) < 100_000_000
    assert 0 < int(conf["max_queued_bytes"]) <= 8 * 1024**3  # 0 would be unbounded
    assert int(conf["max_packet_size"]) == DEFAULT_MAX_PACKET_BYTES
    inflight = int(conf["max_inflight_messages"])
    # The worker holds PUBACKs until a batch is stored: a batch must fit in flight.
    assert inflight == 0 or inflight >= Settings().batch_max_rows


async def test_compose_mosquitto_refuses_anonymous_and_oversized_packets(
    tmp_path: Path,
) -> None:
    """Debian's Mosquitto runs compose's own mosquitto.conf (paths and ports moved here)
    with account files as mosquitto-sync writes them: anonymous clients are refused on
    both listeners, a device is its username whatever client id it sends, and a packet
    over max_packet_size closes its connection without being delivered."""
    need(os.path.exists(MOSQUITTO), "mosquitto binary")
    work = Path(tempfile.mkdtemp(prefix="iotp-deploy-mosq-"))
    work.chmod(0o777)  # Mosquitto started as root drops to its own user
    device_port, platform_port = free_port(), free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    text = (
        text.replace("/mosquitto/data/", f"{work}/")
        .replace("/mosquitto/auth/", f"{work}/")
        .replace("listener 1883\n", f"listener {device_port} 127.0.0.1\n")
        .replace("listener 1884\n", f"listener {platform_port} 127.0.0.1\n")
        .replace("log_dest stdout", f"log_dest file {work}/log")
    )
    (work / "passwords").write_text(f"A1:{hash_mqtt_secret('a1-secret-0123456789')}\n")
    (work / "acl").write_text(render_device_acl())
    (work / "platform-passwords").write_text(f"svc:{hash_mqtt_secret('svc-password')}\n")
    (work / "platform-acl").write_text("user svc\ntopic readwrite #\n")
    for name in ("passwords", "acl", "platform-passwords", "platform-acl"):
        (work / name).chmod(0o644)
    conf = work / "mosquitto.conf"
    conf.write_text(text)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    devices = f"mqtt://127.0.0.1:{device_port}"
    platform = f"mqtt://127.0.0.1:{platform_port}"
    clients: list[Client] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, (work / "log").read_text(errors="replace")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", platform_port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("mosquitto did not open its port")
        for url in (devices, platform):
            with pytest.raises(Refused):
                await Client(url, "anon", None, None).connect()
        with pytest.raises(Refused):  # the platform's accounts are not on the device side
            await Client(devices, "svc", "svc", "svc-password").connect()
        watcher = await Client(platform, "watcher", "svc", "svc-password").connect()
        clients.append(watcher)
        assert await watcher.subscribe("devices/#") in (0, 1)
        device = await Client(devices, "someone-else", "A1", "a1-secret-0123456789").connect()
        clients.append(device)
        limit = int(_conf(DEPLOY / "mosquitto" / "mosquitto.conf")["max_packet_size"])
        device.publish("devices/A1/data", b"x" * (limit + 1))
        await asyncio.wait_for(device.disconnected.wait(), 5)
        again = await Client(devices, "A1", "A1", "a1-secret-0123456789").connect()
        clients.append(again)
        again.publish("devices/A1/data", b'{"t": 1}')
        assert await watcher.next() == ("devices/A1/data", b'{"t": 1}')  # nothing before it
    finally:
        for client in clients:
            await client.close()
        proc.terminate()
        proc.wait(10)


def test_rabbitmq_config() -> None:
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_mqtt" in plugins
    conf: dict[str, str] = {}
    for line in (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            conf[key.strip()] = value.strip()
    assert conf["mqtt.listeners.tcp.default"] == "1883"
    assert int(conf["mqtt.prefetch"]) >= Settings().batch_max_rows
    # RabbitMQ 3.13 (compose): no anonymous MQTT, packets limited as on the other brokers
    assert conf["mqtt.allow_anonymous"] == "false"
    assert int(conf["mqtt.max_packet_size_authenticated"]) == DEFAULT_MAX_PACKET_BYTES
    assert int(conf["mqtt.max_packet_size_unauthenticated"]) <= 65536


def test_nginx_proxies_the_websocket_and_the_api() -> None:
    text = (DEPLOY / "nginx" / "default.conf").read_text()
    ws = text.split("location = /api/ws", 1)[1].split("}", 1)[0]
    assert "proxy_set_header Upgrade $http_upgrade" in ws
    assert "proxy_http_version 1.1" in ws
    assert "location /api/" in text
    assert "try_files $uri $uri/ /index.html" in text


def test_dockerfiles_are_small_and_build_the_dashboard() -> None:
    platform = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in platform
    assert "pip install ." in platform
    assert "npm run build" in platform
    web = (DEPLOY / "Dockerfile.web").read_text()
    assert "deploy/nginx/default.conf" in web
