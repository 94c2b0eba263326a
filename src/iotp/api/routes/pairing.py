"""The pairing window and the fleet secret (admins only): devices that provision with
the fleet secret while the window is open are approved at once."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from iotp.api.deps import SessionDep, StateDep
from iotp.api.schemas import iso
from iotp.api.security import ROLE_KEY
from iotp.services import pairing

router = APIRouter(prefix="/api/pairing", tags=["credentials"])
ADMIN = {ROLE_KEY: "admin"}


class PairingPublic(BaseModel):
    open: bool
    open_until: datetime | None
    secure: bool = Field(description="false: open mode, devices need no credentials")
    fleet_secret: str | None = Field(
        description="what devices provision with (secure mode; admins only)"
    )
    auto_approve: bool = Field(description="IOTP_AUTO_APPROVE: every request is approved")


class PairingOpen(BaseModel):
    minutes: float = Field(default=10, gt=0, le=pairing.MAX_PAIRING_MINUTES)


async def _public(state: StateDep, session: SessionDep) -> PairingPublic:
    until = await pairing.open_until(session)
    settings = state.settings
    fleet = settings.provisioning_secret.get_secret_value() if settings.secure else ""
    return PairingPublic(
        open=until is not None,
        open_until=iso(until),
        secure=settings.secure,
        fleet_secret=fleet or None,
        auto_approve=settings.auto_approve,
    )


@router.get("", response_model=PairingPublic, openapi_extra=ADMIN)
async def get_pairing(state: StateDep, session: SessionDep) -> PairingPublic:
    return await _public(state, session)


@router.put("", response_model=PairingPublic, openapi_extra=ADMIN)
async def open_pairing(body: PairingOpen, state: StateDep, session: SessionDep) -> PairingPublic:
    """Open (or extend) the window for ``minutes``."""
    await pairing.open_window(session, minutes=body.minutes)
    await session.commit()
    return await _public(state, session)


@router.delete("", response_model=PairingPublic, openapi_extra=ADMIN)
async def close_pairing(state: StateDep, session: SessionDep) -> PairingPublic:
    await pairing.close_window(session)
    await session.commit()
    return await _public(state, session)
