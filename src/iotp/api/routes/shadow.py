"""Device shadow: desired vs reported state, the delta, and whether they agree."""

from __future__ import annotations

from fastapi import APIRouter

from iotp.api.control import ShadowPublic, ShadowUpdate, request
from iotp.api.deps import SessionDep, StateDep
from iotp.protocol.control import ControlRequest
from iotp.services import shadow as shadow_service

router = APIRouter(prefix="/api/devices", tags=["shadow"])


@router.get("/{device_id}/shadow", response_model=ShadowPublic)
async def get_shadow(session: SessionDep, device_id: str) -> ShadowPublic:
    return ShadowPublic.model_validate(await shadow_service.get(session, device_id=device_id))


async def _set(
    state: StateDep, session: SessionDep, device_id: str, body: ShadowUpdate, *, merge: bool
) -> ShadowPublic:
    view = await shadow_service.set_desired(
        session, device_id=device_id, desired=body.desired, merge=merge
    )
    await session.commit()
    request(state, ControlRequest.SHADOW, [device_id])
    return ShadowPublic.model_validate(view)


@router.put("/{device_id}/shadow", response_model=ShadowPublic)
async def replace_desired(
    state: StateDep, session: SessionDep, device_id: str, body: ShadowUpdate
) -> ShadowPublic:
    """Replace the desired state; the platform sends the commands that close the delta."""
    return await _set(state, session, device_id, body, merge=False)


@router.patch("/{device_id}/shadow", response_model=ShadowPublic)
async def patch_desired(
    state: StateDep, session: SessionDep, device_id: str, body: ShadowUpdate
) -> ShadowPublic:
    """Merge into the desired state (JSON merge patch: null removes a key)."""
    return await _set(state, session, device_id, body, merge=True)
