"""User management (admins only: see iotp.api.security)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from iotp.api.deps import SessionDep
from iotp.api.schemas import iso
from iotp.api.security import CurrentPrincipal, SecurityContext
from iotp.db.auth_models import User
from iotp.services import users as user_service
from iotp.services.auth import Role

router = APIRouter(prefix="/api/users", tags=["users"])


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=user_service.USERNAME_RE.pattern)
    password: str = Field(min_length=8, max_length=1024)
    role: Role = Role.VIEWER


class UserUpdate(BaseModel):
    role: Role | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    disabled: bool | None = None


class UserPublic(BaseModel):
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: datetime | None

    @classmethod
    def of(cls, u: User) -> UserPublic:
        return cls(
            id=u.id,
            username=u.username,
            role=Role(u.role),
            disabled=u.disabled,
            created_at=iso(u.created_at),
        )


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


def _changed(request: Request) -> None:
    """Tokens and open WebSockets of a changed user stop working now (see security)."""
    sec: SecurityContext = request.app.state.security
    sec.changed()


@router.get("", response_model=UsersPublic)
async def list_users(session: SessionDep) -> UsersPublic:
    rows = await user_service.list_users(session)
    return UsersPublic(data=[UserPublic.of(u) for u in rows], count=len(rows))


@router.post(
    "", response_model=UserPublic, status_code=status.HTTP_201_CREATED, responses={409: {}}
)
async def create_user(session: SessionDep, body: UserCreate) -> UserPublic:
    user = await user_service.create(
        session, username=body.username, password=body.password, role=body.role
    )
    await session.commit()
    return UserPublic.of(user)


@router.get("/{user_id}", response_model=UserPublic, responses={404: {}})
async def get_user(session: SessionDep, user_id: int) -> UserPublic:
    return UserPublic.of(await user_service.get(session, user_id))


@router.patch("/{user_id}", response_model=UserPublic, responses={404: {}, 422: {}})
async def update_user(
    request: Request, session: SessionDep, user_id: int, body: UserUpdate
) -> UserPublic:
    user = await user_service.update(
        session,
        user_id=user_id,
        role=body.role,
        password=body.password,
        disabled=body.disabled,
    )
    await session.commit()
    _changed(request)
    return UserPublic.of(user)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def delete_user(
    request: Request, session: SessionDep, user_id: int, principal: CurrentPrincipal
) -> Response:
    if principal.kind == "user" and principal.id == user_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "you cannot delete yourself")
    await user_service.delete(session, user_id=user_id)
    await session.commit()
    _changed(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
