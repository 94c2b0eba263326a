"""deploy/: the compose file validated by docker-compose itself (no Docker engine runs
here), and the broker configs checked by the real brokers' rules where we can run them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotp.netutil import free_port
from iotp.settings import Settings
from tests.support import MOSQUITTO, need

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = {"postgres", "mosquitto", "rabbitmq", "api", "worker", "web"}


def compose_config(*profiles: str) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    need(exe is not None, "docker-compose (Debian package docker-compose)")
    assert exe is not None
    args = [exe, "-f", str(DEPLOY / "compose.yaml")]
    for p in profiles:
        args += ["--profile", p]
    env = {**os.environ, "POSTGRES_PASSWORD": "test-password"}
    out = subprocess.run(
        [*args, "config"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def test_compose_is_valid_and_has_every_service() -> None:
    config = compose_config("rabbitmq", "secure", "rabbitmq-secure")
    services = config["services"]
    assert set(services) >= SERVICES | {
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
    assert services["mosquitto-sync"]["profiles"] == ["secure"]
    assert services["worker-rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services["rabbitmq-sync"]["profiles"] == ["rabbitmq-secure"]
    for name in SERVICES - {"rabbitmq"}:
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
        assert env["IOTP_DATABASE_URL"].startswith("postgresql://iotp:test-password@postgres")
        assert env["IOTP_MQTT_URL"] == "mqtt://mosquitto:1883"
        # Every value the platform reads must be a valid setting.
        Settings(**{k[5:].lower(): v for k, v in env.items() if k.startswith("IOTP_") and v})


def test_rabbitmq_profile_workers_compete_on_one_queue() -> None:
    """On RabbitMQ (no shared subscriptions) the workers consume one AMQP queue; their
    commands and events go over RabbitMQ's MQTT plugin; all of it valid settings."""
    services = compose_config("rabbitmq", "rabbitmq-secure")["services"]
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
    settings = Settings(**{k[5:].lower(): v for k, v in env.items() if k.startswith("IOTP_") and v})
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


def test_compose_refuses_a_missing_database_password() -> None:
    exe = shutil.which("docker-compose")
    need(exe is not None, "docker-compose")
    assert exe is not None
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    out = subprocess.run(
        [exe, "-f", str(DEPLOY / "compose.yaml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr


def _conf(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            values[key] = value.strip()
    return values


def test_mosquitto_config_keeps_queued_messages() -> None:
    conf = _conf(DEPLOY / "mosquitto" / "mosquitto.conf")
    assert conf["persistence"] == "true"
    assert int(conf["max_queued_messages"]) >= 1_000_000
    inflight = int(conf["max_inflight_messages"])
    # The worker holds PUBACKs until a batch is stored: a batch must fit in flight.
    assert inflight == 0 or inflight >= Settings().batch_max_rows


def test_mosquitto_accepts_the_config() -> None:
    """The real Mosquitto starts with deploy's config (paths and port moved here)."""
    need(os.path.exists(MOSQUITTO), "mosquitto binary")
    work = Path(tempfile.mkdtemp(prefix="iotp-deploy-mosq-"))
    work.chmod(0o777)  # Mosquitto started as root drops to its own user
    port = free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    text = text.replace("/mosquitto/data/", f"{work}/").replace(
        "listener 1883\n", f"listener {port} 127.0.0.1\n"
    )
    text = text.replace("log_dest stdout", f"log_dest file {work}/log")
    conf = work / "mosquitto.conf"
    conf.write_text(text)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, (work / "log").read_text(errors="replace")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("mosquitto did not open its port")
    finally:
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
