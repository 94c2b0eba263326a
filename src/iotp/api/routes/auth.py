"""Sign-in (OAuth2 password flow), token refresh, own profile and password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from iotp.api.deps import SessionDep
from iotp.api.security import CurrentPrincipal, SecurityContext
from iotp.db.auth_models import User
from iotp.services import users as user_service
from iotp.services.auth import AuthError, decode_token, issue_tokens, verify_password
from iotp.services.errors import InvalidRequestError, NotFoundError

router = APIRouter(prefix="/api/auth", tags=["auth"])


class TokenPublic(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=4096)


class MePublic(BaseModel):
    kind: str
    id: int
    name: str
    role: str


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


def _security(request: Request) -> SecurityContext:
    sec: SecurityContext = request.app.state.security
    return sec


def _tokens(sec: SecurityContext, user: User) -> TokenPublic:
    pair = issue_tokens(
        user,
        key=sec.secret_key,
        access_minutes=sec.settings.access_token_minutes,
        refresh_days=sec.settings.refresh_token_days,
    )
    return TokenPublic(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


@router.post(
    "/token",
    response_model=TokenPublic,
    responses={401: {"description": "bad credentials"}, 429: {"description": "too many"}},
)
async def login(
    request: Request,
    response: Response,
    session: SessionDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenPublic:
    """OAuth2 password flow: form fields `username`, `password`."""
    sec = _security(request)
    client = request.client.host if request.client else "?"
    keys = [f"ip:{client}", f"user:{form.username[:64]}"]
    wait = await sec.login_throttle.retry_after(session, keys)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed sign-ins; try again later",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    try:
        user = await user_service.authenticate(
            session, username=form.username, password=form.password
        )
    except AuthError:
        await sec.login_throttle.failed(session, keys)
        await session.commit()  # every replica sees it (shared throttling)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    await sec.login_throttle.succeeded(session, keys[1:])
    await session.commit()
    response.headers["Cache-Control"] = "no-store"
    return _tokens(sec, user)


@router.post("/refresh", response_model=TokenPublic, responses={401: {}})
async def refresh(request: Request, session: SessionDep, body: RefreshRequest) -> TokenPublic:
    """A new token pair for a valid refresh token (invalid after a password change)."""
    sec = _security(request)
    denied = HTTPException(
        status.HTTP_401_UNAUTHORIZED, "invalid refresh token", {"WWW-Authenticate": "Bearer"}
    )
    try:
        claims = decode_token(body.refresh_token, key=sec.secret_key, expected_type="refresh")
        user = await user_service.get(session, int(claims["sub"]))
    except (AuthError, NotFoundError, ValueError):
        raise denied from None
    if user.disabled or claims.get("ver") != user.token_version:
        raise denied
    return _tokens(sec, user)


@router.get("/me", response_model=MePublic)
async def me(principal: CurrentPrincipal) -> MePublic:
    return MePublic(
        kind=principal.kind, id=principal.id, name=principal.name, role=principal.role.value
    )


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, responses={400: {}, 403: {}})
async def change_password(
    request: Request, principal: CurrentPrincipal, session: SessionDep, body: PasswordChange
) -> Response:
    """Change your own password; signs you out everywhere else."""
    if principal.kind != "user":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "API keys have no password")
    user = await user_service.get(session, principal.id)
    if not verify_password(body.current_password, user.password_hash):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "current password is wrong")
    try:
        await user_service.update(session, user_id=user.id, password=body.new_password)
    except InvalidRequestError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    await session.commit()
    _security(request).changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
