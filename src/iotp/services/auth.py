"""Security primitives: roles, password and secret hashing, signed tokens, API keys,
login throttling, and the secure-mode secret policy. No FastAPI imports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import ApiKey, LoginFailure, User
from iotp.services.errors import ConfigurationError, IotpError, NotFoundError

if TYPE_CHECKING:
    from iotp.settings import Settings


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class AuthError(IotpError):
    """Bad credentials or token; deliberately vague in what it says."""


# ---- passwords (argon2id) ---------------------------------------------------------

_password_hash = PasswordHash((Argon2Hasher(),))
# Verified against when the user does not exist, so both cases cost the same time.
_DUMMY_HASH = _password_hash.hash(secrets.token_hex(16))
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _password_hash.verify(password, _DUMMY_HASH)
        return False
    try:
        return _password_hash.verify(password, password_hash)
    except Exception:  # noqa: BLE001 - a corrupt hash is a failed login, not a 500
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(15)


# ---- MQTT secrets: Mosquitto's PBKDF2-SHA512 "$7$" format ---------------------------

MQTT_HASH_ITERATIONS = 1000
MQTT_SALT_BYTES = 12


def hash_mqtt_secret(secret: str, iterations: int = MQTT_HASH_ITERATIONS) -> str:
    """The same string Mosquitto's ``mosquitto_passwd`` writes, so one stored hash serves
    the embedded broker and the generated password_file. Device secrets are 256-bit
    random, so the (Mosquitto-compatible) iteration count is not what protects them."""
    salt = os.urandom(MQTT_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mqtt_secret(secret: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        _, kind, iterations, salt_b64, digest_b64 = stored.split("$")
        if kind != "7":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


# ---- the signing key and the secure-mode policy -------------------------------------

WEAK_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "password", "admin", "iotp", "default", "test"}
)
MIN_SECRET_KEY_LENGTH = 32
MIN_PROVISIONING_SECRET_LENGTH = 16
MIN_ADMIN_PASSWORD_LENGTH = 12


def _weak(value: str, min_length: int) -> bool:
    return value.strip().lower() in WEAK_SECRETS or len(value) < min_length


def check_secure_settings(settings: Settings) -> None:
    """Secure (production) mode refuses default, empty or short secrets."""
    problems = []
    if _weak(settings.secret_key.get_secret_value(), MIN_SECRET_KEY_LENGTH):
        problems.append(
            f"IOTP_SECRET_KEY must be set to a random value of at least {MIN_SECRET_KEY_LENGTH}"
            " characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    prov = settings.provisioning_secret.get_secret_value()
    if prov and _weak(prov, MIN_PROVISIONING_SECRET_LENGTH):
        problems.append(
            f"IOTP_PROVISIONING_SECRET must be at least {MIN_PROVISIONING_SECRET_LENGTH}"
            " characters and not a default"
        )
    admin = settings.admin_password.get_secret_value()
    if admin and _weak(admin, MIN_ADMIN_PASSWORD_LENGTH):
        problems.append(
            f"IOTP_ADMIN_PASSWORD must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters"
            " and not a default (or leave it empty to have one generated)"
        )
    if problems:
        raise ValueError("secure mode refuses weak secrets: " + "; ".join(problems))


def resolve_secret_key(settings: Settings) -> str:
    """IOTP_SECRET_KEY, or in open mode a key generated once into data_dir/secret_key."""
    key = settings.secret_key.get_secret_value()
    if key:
        return key
    if settings.secure:
        raise ConfigurationError("IOTP_SECRET_KEY is required in secure mode")
    path = Path(settings.data_dir) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


# ---- tokens (JWT, HS256) --------------------------------------------------------------

ALGORITHM = "HS256"
ISSUER = "iotp"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def issue_tokens(
    user: User, *, key: str, access_minutes: float, refresh_days: float, now: float | None = None
) -> TokenPair:
    now = time.time() if now is None else now
    access_s = int(access_minutes * 60)
    base = {"sub": str(user.id), "iss": ISSUER, "iat": int(now), "ver": user.token_version}
    access = jwt.encode(
        {**base, "typ": "access", "role": user.role, "exp": int(now) + access_s},
        key,
        algorithm=ALGORITHM,
    )
    refresh = jwt.encode(
        {**base, "typ": "refresh", "exp": int(now + refresh_days * 86400)},
        key,
        algorithm=ALGORITHM,
    )
    return TokenPair(access, refresh, access_s)


def decode_token(token: str, *, key: str, expected_type: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise AuthError("invalid or expired token") from exc
    if claims.get("typ") != expected_type:
        raise AuthError("wrong token type")
    return claims


# ---- signed URLs: devices fetch OTA bundles without an API token -------------------


def _url_signature(path: str, expires: int, key: str) -> str:
    msg = f"GET {path} {expires}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def sign_path(path: str, *, key: str, ttl_seconds: float, now: float | None = None) -> str:
    """``path?exp=...&sig=...``: a GET of exactly this path is allowed without a token
    until ``exp`` (the key is resolve_secret_key(settings))."""
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return f"{path}?exp={expires}&sig={_url_signature(path, expires, key)}"


def verify_signed_path(
    path: str, exp: str | None, sig: str | None, *, key: str, now: float | None = None
) -> bool:
    if not exp or not sig or not exp.isdigit():
        return False
    if int(exp) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(sig, _url_signature(path, int(exp), key))


# ---- API keys -----------------------------------------------------------------------

API_KEY_PREFIX = "iotp_"


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


async def create_api_key(
    session: AsyncSession, *, name: str, role: Role, created_by: int | None
) -> tuple[ApiKey, str]:
    """Returns the row and the key itself, which is never stored or shown again."""
    prefix = secrets.token_hex(4)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        prefix=prefix,
        key_hash=_key_hash(key),
        name=name,
        role=role.value,
        created_by=created_by,
        created_at=time.time(),
    )
    session.add(row)
    await session.flush()
    return row, key


async def list_api_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.id))).all())


async def revoke_api_key(session: AsyncSession, *, key_id: int) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError("API key", str(key_id))
    if row.revoked_at is None:
        row.revoked_at = time.time()
    return row


def api_key_prefix(key: str) -> str:
    """The prefix part of ``iotp_<prefix>_<secret>``, to look the key up by."""
    parts = key[len(API_KEY_PREFIX) :].split("_", 1)
    if not looks_like_api_key(key) or len(parts) != 2 or not parts[0]:
        raise AuthError("invalid API key")
    return parts[0]


def api_key_matches(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(key_hash, _key_hash(key))


async def find_api_key(session: AsyncSession, prefix: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))


async def touch_api_key(session: AsyncSession, key_id: int, now: float) -> None:
    """Record a use (callers bound the rate: at most once a minute per key)."""
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    await session.commit()


async def authenticate_api_key(session: AsyncSession, key: str) -> ApiKey:
    row = await find_api_key(session, api_key_prefix(key))
    if row is None or not api_key_matches(key, row.key_hash):
        raise AuthError("invalid API key")
    if row.revoked_at is not None:
        raise AuthError("API key revoked")
    now = time.time()
    if row.last_used_at is None or now - row.last_used_at > 60:  # bounded write rate
        await touch_api_key(session, row.id, now)
    return row


# ---- login throttling ------------------------------------------------------------------


class LoginThrottle:
    """Failed sign-ins per client address and per username in a sliding window; past
    the limit, sign-ins are refused (HTTP 429) until the window has moved on.

    Stored in the database (``login_failures``), so every API replica counts the same
    failures: brute force spread over several replicas is slowed as much as against
    one. Keys are stored as SHA-256 digests; expired rows are deleted as new failures
    arrive. Two replicas checking at the same instant may each let one more attempt
    through (no lock): the limit is approximate by a few attempts, never unbounded.
    The caller commits."""

    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max(1, max_failures)
        self.window = window_seconds

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    async def retry_after(
        self, session: AsyncSession, keys: list[str], now: float | None = None
    ) -> float:
        """Seconds until a sign-in may be tried again; 0 if allowed now."""
        now = time.time() if now is None else now
        wait = 0.0
        for key in keys:
            # The max_failures-th most recent failure in the window, if there is one.
            oldest_counted = await session.scalar(
                select(LoginFailure.at)
                .where(LoginFailure.key == self._digest(key), LoginFailure.at > now - self.window)
                .order_by(LoginFailure.at.desc())
                .offset(self.max_failures - 1)
                .limit(1)
            )
            if oldest_counted is not None:
                wait = max(wait, oldest_counted + self.window - now)
        return wait

    async def failed(
        self, session: AsyncSession, keys: list[str], now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        await session.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window))
        session.add_all(LoginFailure(key=self._digest(key), at=now) for key in keys)
        await session.flush()

    async def succeeded(self, session: AsyncSession, keys: list[str]) -> None:
        digests = [self._digest(key) for key in keys]
        await session.execute(delete(LoginFailure).where(LoginFailure.key.in_(digests)))
