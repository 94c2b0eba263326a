"""One validated settings object for every component (env prefix ``IOTP_``)."""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, TypeAdapter, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Each platform process connects to the broker as its role's own account.
PlatformRole = Literal["worker", "api", "provisioner"]
PLATFORM_ROLES: tuple[PlatformRole, ...] = ("worker", "api", "provisioner")


class MqttUrl:
    """A parsed ``mqtt://user:pass@host:port`` (or ``mqtts://``) address."""

    __slots__ = ("host", "password", "port", "tls", "username")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        self.tls = parts.scheme in ("mqtts", "ssl")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.tls else 1883)
        # Percent-decoded: RabbitMQ's MQTT plugin takes a vhost as "vhost:user".
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


# MQTT packets over this size are refused by every broker configuration the platform
# ships (embedded, Mosquitto, RabbitMQ): device payloads are at most 16 KiB.
DEFAULT_MAX_PACKET_BYTES = 262_144


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOTP_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    # Empty means: SQLite file in data_dir.
    database_url: str = ""
    # Empty means: the embedded broker of `iotp serve` (or 127.0.0.1:1883 for `iotp worker`).
    mqtt_url: str = ""
    # The broker address devices use, as the dashboard and /api/info tell it. Platform
    # processes may reach the broker on a listener of their own (the supervised Mosquitto,
    # compose); empty: the address the platform connects to.
    device_mqtt_url: str = ""
    # The worker's (persistent) session. Platform client ids contain a '.', which no
    # device id has, so no device account can ever take one over.
    mqtt_client_id: str = "iotp.worker"
    # Shared-subscription group for scaling workers out (`$share/<group>/...`); empty = off.
    mqtt_share_group: str = ""
    events_topic_prefix: str = "iotp/events"

    batch_max_rows: int = Field(default=2000, ge=1)
    batch_max_delay_ms: int = Field(default=100, ge=1, le=10_000)
    store_retry_max_seconds: float = Field(default=5.0, gt=0)

    offline_missed_reports: int = Field(default=3, ge=1)
    offline_min_seconds: float = Field(default=6.0, ge=0.5)
    default_report_interval: float = Field(default=2.0, gt=0)

    stats_flush_seconds: float = Field(default=1.0, gt=0)
    ws_client_queue: int = Field(default=1000, ge=1)
    reject_log_interval_seconds: float = Field(default=10.0, ge=0)

    log_level: str = "INFO"
    log_json: bool = False

    # ---- operations (docs/operations.md) ---------------------------------------------
    # Prometheus /metrics of the worker on this port (0: off); the API serves /metrics.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    # Raw telemetry older than this is deleted (PostgreSQL: whole partitions dropped);
    # 0 keeps it forever. Rollups are kept longer (below).
    retention_days: float = Field(default=0, ge=0)
    rollup_minute_retention_days: float = Field(default=90, ge=0)
    rollup_hour_retention_days: float = Field(default=0, ge=0)
    # Partitions (PostgreSQL) are one day wide and created this many days ahead.
    partitions_ahead_days: int = Field(default=3, ge=1, le=60)
    # How often the maintenance leader rolls up, drops old data and creates partitions.
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)
    # The overview's history (devices online, messages/s), sampled every maintenance round.
    stats_history_days: float = Field(default=2, gt=0)

    # ---- the supervised Mosquitto of `iotp serve` (docs/operations.md) ----------------
    # Larger MQTT packets are refused (the connection is closed), by the embedded broker
    # too; the shipped Mosquitto and RabbitMQ configs use the same.
    mqtt_max_packet_bytes: int = Field(default=DEFAULT_MAX_PACKET_BYTES, ge=1024)
    # Per client session, global in Mosquitto 2.0: they bound the worker's queue while it
    # is away as much as a device's (docs/operations.md#limits).
    mqtt_max_queued_messages: int = Field(default=100_000, ge=100)
    mqtt_max_queued_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # The platform's own listener (127.0.0.1); 0: a free port.
    mqtt_platform_port: int = Field(default=0, ge=0, le=65535)

    # ---- RabbitMQ (docs/operations.md#rabbitmq) ---------------------------------------
    # Where the worker takes device messages from: "mqtt" (a subscription, shared with
    # IOTP_MQTT_SHARE_GROUP) or "amqp" (competing consumers on one RabbitMQ queue bound to
    # amq.topic; commands and events still go over MQTT through RabbitMQ's MQTT plugin).
    worker_source: Literal["mqtt", "amqp"] = "mqtt"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_queue: str = "iotp.telemetry"
    amqp_queue_type: Literal["quorum", "classic"] = "quorum"
    # Unacknowledged deliveries per worker; 0: twice batch_max_rows (capped at 65535).
    amqp_prefetch: int = Field(default=0, ge=0, le=65535)
    # Secure mode on RabbitMQ: keep one RabbitMQ user per device, with topic permissions,
    # through the management HTTP API (`iotp rabbitmq sync`), e.g.
    # http://admin:secret@rabbitmq:15672; empty: off. Devices use this vhost.
    rabbitmq_management_url: str = ""
    rabbitmq_vhost: str = "/"

    # ---- security (docs/security.md) ----------------------------------------------
    # Open mode (IOTP_OPEN=true, `--open`): anyone who reaches the MQTT port may act as
    # any device. Default: secure, devices need credentials (topic ACLs in the broker).
    # IOTP_SECURE (its older, inverse name) is read only when IOTP_OPEN is not set.
    open: bool = False
    # Signs API tokens and derives the platform's own MQTT passwords. Empty: generated
    # once into data_dir/secret_key (every process sharing the data dir uses it).
    secret_key: SecretStr = SecretStr("")
    # Password of the user `admin` created on first start (empty: generated, printed once).
    admin_password: SecretStr = SecretStr("")
    access_token_minutes: float = Field(default=30, gt=0)
    refresh_token_days: float = Field(default=7, gt=0)
    # Fleet provisioning secret: unknown devices connect with it to ask for credentials.
    # Empty in secure mode: generated once into data_dir/fleet_secret.
    provisioning_secret: SecretStr = SecretStr("")
    auto_approve: bool = False
    # Provisioning requests (each provisioner): per device id and for all ids, per second;
    # requests waiting for an admin at most (a refused device asks again later).
    provisioning_rate_per_id: float = Field(default=0.2, gt=0)
    provisioning_rate: float = Field(default=20.0, gt=0)
    provisioning_max_pending: int = Field(default=200, ge=1)
    # MQTT accounts of the platform's own processes: "<this>-worker", "<this>-api",
    # "<this>-provisioner", passwords derived from the secret key.
    mqtt_service_user: str = "iotp"
    # How often brokers pick up credential changes: a revoked device is disconnected
    # within this plus the broker's reload (bench/RESULTS.md "Broker accounts").
    credentials_poll_seconds: float = Field(default=1.0, gt=0)
    # Messages per second per device (token bucket; burst = 5 s worth). None: off in open
    # mode, 20/s in secure mode; 0 = off.
    device_rate_limit: float | None = Field(default=None, ge=0)
    # Sign-in throttling (docs/security.md#sign-in): failures per (user, address) and per
    # address before that address is refused for the window; past login_max_failures a
    # user's attempts from anywhere are slowed (up to login_max_delay_seconds), never refused.
    login_max_failures: int = Field(default=5, ge=1)
    login_address_max_failures: int = Field(default=20, ge=1)
    login_window_seconds: float = Field(default=300, gt=0)
    login_max_delay_seconds: float = Field(default=2.0, ge=0, le=30)
    # Argon2 verifications running at once (each takes a core for ~0.1 s).
    login_verify_concurrency: int = Field(default=1, ge=1, le=64)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto the API believes (uvicorn's
    # forwarded_allow_ips: addresses or networks, comma-separated; "*" trusts anyone).
    # Behind compose's nginx: the compose network.
    forwarded_allow_ips: str = "127.0.0.1"
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    cors_origins: list[str] = []
    # TLS: the embedded broker adds an MQTTS listener and the API serves HTTPS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    mqtt_tls_port: int = Field(default=8883, ge=1, le=65535)

    # ---- adapters for foreign firmware (docs/devices.md) -----------------------------
    # The shipped mappings, each on unless turned off (IOTP_ADAPTERS_TASMOTA=false).
    adapters_tasmota: bool = True
    adapters_zigbee2mqtt: bool = True
    adapters_shelly: bool = True
    # A directory of mapping files (*.yaml, *.yml, *.json) read at start.
    adapters_dir: Path | None = None
    # How often workers pick up mappings added, changed or turned off through the API.
    adapters_poll_seconds: float = Field(default=2.0, gt=0)

    # ---- automations, alerts, webhooks (docs/automations.md) ------------------------
    # Webhook targets on private, loopback or link-local addresses (SSRF guard): off.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    # Retry n waits backoff * 2**(n-1) seconds (capped at an hour).
    webhook_backoff_seconds: float = Field(default=5.0, gt=0)
    # A webhook is disabled (and an alert raised) after this many failed attempts in a row.
    webhook_disable_after: int = Field(default=20, ge=1)
    # Signed timestamps older than this are refused by receivers (documented default).
    webhook_tolerance_seconds: int = Field(default=300, ge=1)

    # ---- Home Assistant (docs/devices.md#home-assistant) -----------------------------
    # Announce the platform's devices to Home Assistant (retained discovery configs), take
    # its commands, and register devices that announce themselves with its discovery.
    homeassistant_discovery: bool = False
    homeassistant_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+$")
    # The platform's own topics for Home Assistant: availability and command topics.
    homeassistant_topic_root: str = Field(default="iotp-ha", pattern=r"^[A-Za-z0-9_-]+$")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="before")
    @classmethod
    def _one_mode(cls, data: Any) -> Any:
        """``secure`` (IOTP_SECURE, or ``Settings(secure=...)``) is the inverse of ``open``;
        when both are given, ``open`` wins."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        secure = data.pop("secure", None)
        if secure is None:
            secure = os.environ.get("IOTP_SECURE")
        if "open" not in data and secure is not None:
            data["open"] = not TypeAdapter(bool).validate_python(secure)
        return data

    @property
    def secure(self) -> bool:
        return not self.open

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.secure:
            check_secure_settings(self)
        return self

    @property
    def effective_device_rate_limit(self) -> float:
        if self.device_rate_limit is None:
            return 20.0 if self.secure else 0.0
        return self.device_rate_limit

    @property
    def effective_amqp_prefetch(self) -> int:
        return self.amqp_prefetch or min(2 * self.batch_max_rows, 65535)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            elif url.startswith("sqlite:///"):
                url = "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'iotp.db').resolve()}"

    def mqtt(
        self, default: str = "mqtt://127.0.0.1:1883", role: PlatformRole = "worker"
    ) -> MqttUrl:
        """Where a platform process connects, as its role's own account (unless the URL
        names one)."""
        url = MqttUrl(self.mqtt_url or default)
        if not url.username and self.secret_key.get_secret_value():
            url.username = self.mqtt_service_account(role)
            url.password = self.mqtt_service_password(role)
        return url

    def mqtt_service_account(self, role: PlatformRole) -> str:
        return f"{self.mqtt_service_user}-{role}"

    def mqtt_service_password(self, role: PlatformRole) -> str:
        """Derived from secret_key, so every process that shares the key agrees on it."""
        key = self.secret_key.get_secret_value().encode()
        return hmac.new(key, f"iotp-mqtt-{role}".encode(), hashlib.sha256).hexdigest()

    def homeassistant_mqtt_password(self) -> str:
        """Home Assistant's broker account (``homeassistant``), derived like the
        platform's own (``iotp homeassistant credentials`` shows it)."""
        key = self.secret_key.get_secret_value().encode()
        return hmac.new(key, b"iotp-mqtt-homeassistant", hashlib.sha256).hexdigest()

    def mqtt_service_accounts(self) -> dict[str, str]:
        """Every platform account: username -> password."""
        return {
            self.mqtt_service_account(role): self.mqtt_service_password(role)
            for role in PLATFORM_ROLES
        }


# ---- the secure-mode policy ----------------------------------------------------------

WEAK_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "password", "admin", "iotp", "default", "test"}
)
MIN_SECRET_KEY_LENGTH = 32
MIN_PROVISIONING_SECRET_LENGTH = 16
MIN_ADMIN_PASSWORD_LENGTH = 12


def _weak(value: str, min_length: int) -> bool:
    return value.strip().lower() in WEAK_SECRETS or len(value) < min_length


def check_secure_settings(settings: Settings) -> None:
    """Secure mode refuses default or short secrets (empty ones are generated at start,
    ``iotp.services.auth.ensure_secrets``)."""
    problems = []
    key = settings.secret_key.get_secret_value()
    if key and _weak(key, MIN_SECRET_KEY_LENGTH):
        problems.append(
            f"IOTP_SECRET_KEY must be set to a random value of at least {MIN_SECRET_KEY_LENGTH}"
            " characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    prov = settings.provisioning_secret.get_secret_value()
    if prov and _weak(prov, MIN_PROVISIONING_SECRET_LENGTH):
        problems.append(
            f"IOTP_PROVISIONING_SECRET must be at least {MIN_PROVISIONING_SECRET_LENGTH}"
            " characters and not a default"
        )
    admin = settings.admin_password.get_secret_value()
    if admin and _weak(admin, MIN_ADMIN_PASSWORD_LENGTH):
        problems.append(
            f"IOTP_ADMIN_PASSWORD must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters"
            " and not a default (or leave it empty to have one generated)"
        )
    if problems:
        raise ValueError("secure mode refuses weak secrets: " + "; ".join(problems))


@lru_cache
def get_settings() -> Settings:
    """From the environment, .env, and the files in IOTP_SECRETS_DIR when it is set: one
    file per setting, named like its variable (``IOTP_SECRET_KEY``), as the compose
    deployment generates them once for every replica. The environment wins."""
    secrets_dir = os.environ.get("IOTP_SECRETS_DIR")
    if secrets_dir:
        return Settings(_secrets_dir=secrets_dir)
    return Settings()
