"""What a client needs to know about this platform, e.g. the broker address devices use."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from iotp import __version__
from iotp.api.deps import StateDep

router = APIRouter(prefix="/api", tags=["system"])

LOCAL_HOSTS = frozenset({"127.0.0.1", "0.0.0.0", "localhost", "::1", "::"})


class MqttInfo(BaseModel):
    host: str | None = Field(
        description="broker host for devices; null: the host this API was reached at"
    )
    port: int
    tls: bool


class InfoPublic(BaseModel):
    version: str
    mqtt: MqttInfo


@router.get("/info", response_model=InfoPublic)
async def info(state: StateDep) -> InfoPublic:
    url = state.device_url
    host = None if url.host in LOCAL_HOSTS else url.host
    return InfoPublic(version=__version__, mqtt=MqttInfo(host=host, port=url.port, tls=url.tls))
