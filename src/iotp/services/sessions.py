"""Sign-in sessions: refresh tokens, rotated on every use, revoked by family.

A sign-in starts a family. Each refresh marks its token used and issues the next one of
the same family. A token presented after it was used can only be a copy (the client got
a new one in exchange), so the whole family is revoked: the thief and the victim are both
signed out, and the victim signs in again. Logout revokes the family too. Only SHA-256
digests of the (256-bit random) tokens are stored. No FastAPI imports."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import RefreshToken, User
from iotp.errors import AuthError


@dataclass(frozen=True)
class Issued:
    token: str
    family: str
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(family: str, *, key: str) -> str:
    """The CSRF token of a session: bound to its family, so it cannot be guessed or
    reused for another session (signed double submit)."""
    return hmac.new(key.encode(), f"csrf:{family}".encode(), hashlib.sha256).hexdigest()


def csrf_matches(family: str, presented: str | None, *, key: str) -> bool:
    return presented is not None and hmac.compare_digest(presented, csrf_token(family, key=key))


async def _issue(
    session: AsyncSession, *, user: User, family: str, days: float, now: float
) -> Issued:
    token = secrets.token_urlsafe(32)
    expires_at = now + days * 86400
    session.add(
        RefreshToken(
            token_hash=_digest(token),
            family=family,
            user_id=user.id,
            token_version=user.token_version,
            created_at=now,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return Issued(token, family, expires_at)


async def start(
    session: AsyncSession, *, user: User, days: float, now: float | None = None
) -> Issued:
    """A new family for a sign-in (the caller commits)."""
    now = time.time() if now is None else now
    await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now))
    return await _issue(session, user=user, family=secrets.token_hex(16), days=days, now=now)


async def find(session: AsyncSession, token: str) -> RefreshToken:
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == _digest(token))
    )
    if row is None:
        raise AuthError("invalid refresh token")
    return row


async def revoke_family(session: AsyncSession, family: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def rotate(
    session: AsyncSession, row: RefreshToken, *, days: float, now: float | None = None
) -> tuple[User, Issued]:
    """Exchange a refresh token for the next one of its family. A second use of the
    same token revokes the family (committed here, since the caller answers 401)."""
    now = time.time() if now is None else now
    if row.revoked_at is not None or row.expires_at <= now:
        raise AuthError("invalid refresh token")
    taken = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        await revoke_family(session, row.family, now)
        await session.commit()
        raise AuthError("refresh token reused: this session is revoked")
    user = await session.get(User, row.user_id)
    if user is None or user.disabled or user.token_version != row.token_version:
        await revoke_family(session, row.family, now)
        raise AuthError("invalid refresh token")
    return user, await _issue(session, user=user, family=row.family, days=days, now=now)
