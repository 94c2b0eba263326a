"""Mappings added through the API (migration 0016): the worker and the API read them
beside the shipped ones and the files of IOTP_ADAPTERS_DIR (iotp.adapters)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from iotp.db.models import Base, JsonType


class AdapterMappingRow(Base):
    __tablename__ = "adapter_mappings"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The mapping as validated (iotp.adapters.spec.Mapping), JSON.
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[float] = mapped_column(Float, index=True)
