"""One validated settings object for every component (env prefix ``IOTP_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        self.username = parts.username
        self.password = parts.password

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOTP_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    # Empty means: SQLite file in data_dir.
    database_url: str = ""
    # Empty means: the embedded broker of `iotp serve` (or 127.0.0.1:1883 for `iotp worker`).
    mqtt_url: str = ""
    mqtt_client_id: str = "iotp-worker"
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

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

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

    def mqtt(self, default: str = "mqtt://127.0.0.1:1883") -> MqttUrl:
        return MqttUrl(self.mqtt_url or default)


@lru_cache
def get_settings() -> Settings:
    return Settings()
