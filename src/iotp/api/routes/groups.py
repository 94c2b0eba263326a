"""Tags as device groups: list them, add or remove one on many devices at once."""

from __future__ import annotations

from fastapi import APIRouter

from iotp.api.control import TagEdit, TagEditPublic, TagPublic
from iotp.api.deps import SessionDep
from iotp.services import groups

router = APIRouter(prefix="/api/tags", tags=["groups"])


@router.get("", response_model=list[TagPublic])
async def list_tags(session: SessionDep) -> list[TagPublic]:
    return [TagPublic(tag=t, count=n) for t, n in (await groups.list_tags(session)).items()]


@router.post("/{tag}/devices", response_model=TagEditPublic)
async def edit_tag(session: SessionDep, tag: str, body: TagEdit) -> TagEditPublic:
    """Add the tag to ``add`` devices and remove it from ``remove`` devices."""
    changed, unknown = await groups.tag_devices(session, tag=tag, add=body.add, remove=body.remove)
    await session.commit()
    return TagEditPublic(tag=tag, changed=changed, unknown_devices=unknown)
