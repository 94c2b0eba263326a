"""API keys for integrations (admins only). A key is shown once, when created."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from iotp.api.deps import SessionDep
from iotp.api.schemas import iso
from iotp.api.security import CurrentPrincipal, SecurityContext
from iotp.db.auth_models import ApiKey
from iotp.services import auth as auth_service
from iotp.services.auth import Role

router = APIRouter(prefix="/api/api-keys", tags=["api-keys"])


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: Role = Role.VIEWER


class ApiKeyPublic(BaseModel):
    id: int
    prefix: str
    name: str
    role: Role
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, k: ApiKey) -> ApiKeyPublic:
        return cls(
            id=k.id,
            prefix=k.prefix,
            name=k.name,
            role=Role(k.role),
            created_at=iso(k.created_at),
            last_used_at=iso(k.last_used_at),
            revoked_at=iso(k.revoked_at),
        )


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the key itself: shown only in this response")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int


@router.get("", response_model=ApiKeysPublic)
async def list_keys(session: SessionDep) -> ApiKeysPublic:
    rows = await auth_service.list_api_keys(session)
    return ApiKeysPublic(data=[ApiKeyPublic.of(k) for k in rows], count=len(rows))


@router.post("", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_key(
    session: SessionDep, body: ApiKeyCreate, principal: CurrentPrincipal
) -> ApiKeyCreated:
    row, key = await auth_service.create_api_key(
        session,
        name=body.name,
        role=body.role,
        created_by=principal.id if principal.kind == "user" else None,
    )
    await session.commit()
    return ApiKeyCreated(**ApiKeyPublic.of(row).model_dump(), key=key)


@router.post("/{key_id}/revoke", response_model=ApiKeyPublic, responses={404: {}})
async def revoke_key(request: Request, session: SessionDep, key_id: int) -> ApiKeyPublic:
    """Revoke: the key is refused from now on, and WebSockets opened with it close."""
    row = await auth_service.revoke_api_key(session, key_id=key_id)
    await session.commit()
    sec: SecurityContext = request.app.state.security
    sec.changed()
    return ApiKeyPublic.of(row)
