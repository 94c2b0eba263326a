"""Platform users (admin, operator, viewer): shared by the API and `iotp user ...`."""

from __future__ import annotations

import re
import time

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import User
from iotp.errors import AuthError, ConflictError, InvalidRequestError, NotFoundError
from iotp.services.auth import (
    MIN_PASSWORD_LENGTH,
    PasswordVerifier,
    Role,
    generate_password,
    hash_password,
)

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ADMIN_USERNAME = "admin"
# Users the platform creates for its integrations: Home Assistant's commands are made as
# this operator (iotp.homeassistant), so an admin can demote or disable it like anyone.
HOMEASSISTANT_USER = "homeassistant"
SERVICE_USERS = (HOMEASSISTANT_USER,)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequestError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


async def create(session: AsyncSession, *, username: str, password: str, role: Role) -> User:
    if USERNAME_RE.fullmatch(username) is None:
        raise InvalidRequestError(f"username must match {USERNAME_RE.pattern}")
    _check_password(password)
    if await get_by_name(session, username) is not None:
        raise ConflictError(f"user {username!r} exists")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role.value,
        disabled=False,
        token_version=0,
        created_at=time.time(),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise ConflictError(f"user {username!r} exists") from None
    return user


async def get(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", str(user_id))
    return user


async def get_by_name(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.scalars(select(User).order_by(User.id))).all())


def _counts_as_admin(user: User) -> bool:
    """An enabled admin: what must remain (a disabled one cannot sign in)."""
    return user.role == Role.ADMIN.value and not user.disabled


async def _admins(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN.value, User.disabled.is_(False))
    )
    return int(count or 0)


async def update(
    session: AsyncSession,
    *,
    user_id: int,
    role: Role | None = None,
    password: str | None = None,
    disabled: bool | None = None,
) -> User:
    user = await get(session, user_id)
    demoting = (role is not None and role is not Role.ADMIN) or disabled is True
    if _counts_as_admin(user) and demoting and await _admins(session) <= 1:
        raise InvalidRequestError("the last admin cannot be demoted or disabled")
    if role is not None:
        user.role = role.value
    if disabled is not None:
        user.disabled = disabled
    if password is not None:
        _check_password(password)
        user.password_hash = hash_password(password)
    if role is not None or password is not None or disabled:
        user.token_version += 1  # sign out everywhere
    await session.flush()
    return user


async def set_password(session: AsyncSession, *, username: str, password: str) -> User:
    user = await get_by_name(session, username)
    if user is None:
        raise NotFoundError("user", username)
    return await update(session, user_id=user.id, password=password)


async def delete(session: AsyncSession, *, user_id: int) -> None:
    user = await get(session, user_id)
    if _counts_as_admin(user) and await _admins(session) <= 1:
        raise InvalidRequestError("the last admin cannot be deleted")
    await session.delete(user)
    await session.flush()


async def authenticate(
    session: AsyncSession, *, username: str, password: str, verifier: PasswordVerifier
) -> User:
    """Ends the session's transaction (a commit) before verifying the password."""
    user = await get_by_name(session, username)
    # Hand the connection back before queueing for a verification slot: sign-ins
    # waiting for Argon2 would otherwise hold every pooled connection, and `iotp serve`
    # shares the pool between the API and ingest.
    await session.commit()
    ok = await verifier.verify(password, user.password_hash if user is not None else None)
    if user is None or not ok or user.disabled:
        raise AuthError("incorrect username or password")
    return user


async def ensure_admin(session: AsyncSession, *, password: str) -> str | None:
    """First start: create `admin` if there are no users at all. Returns the password
    when it was generated here (to be shown once), else None."""
    # Service accounts (made by the platform itself, never signed in with) do not count.
    people = select(func.count()).select_from(User).where(User.username.not_in(SERVICE_USERS))
    if await session.scalar(people):
        return None
    generated = None
    if not password:
        password = generated = generate_password()
    try:
        await create(session, username=ADMIN_USERNAME, password=password, role=Role.ADMIN)
        await session.commit()
    except (ConflictError, IntegrityError):  # another replica created it first
        await session.rollback()
        return None
    return generated
