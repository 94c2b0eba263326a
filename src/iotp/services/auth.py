"""Security primitives: roles, password and secret hashing, signed tokens, API keys,
login throttling, and the secure-mode secret policy. No FastAPI imports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import ApiKey, LoginFailure, User
from iotp.errors import AuthError, NotFoundError

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

# One iteration: Mosquitto re-checks the password of every connected client against the
# password_file on each reload (one per approval or revocation), so the iteration count
# multiplies into a stall of the whole broker (1000 iterations: 2-3 s with 500 devices
# connected, bench/RESULTS.md). MQTT secrets are random (256-bit when issued, generated
# by the device when provisioned), so stretching adds nothing to them.
MQTT_HASH_ITERATIONS = 1
MQTT_SALT_BYTES = 12


def hash_mqtt_secret(secret: str, iterations: int = MQTT_HASH_ITERATIONS) -> str:
    """The same string Mosquitto's ``mosquitto_passwd`` writes, so one stored hash serves
    the embedded broker and the generated password_file."""
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


# ---- the signing key -----------------------------------------------------------------

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
FLEET_SECRET_FILE = "fleet_secret"  # noqa: S105 - a file name


def resolve_secret_key(settings: Settings) -> str:
    """IOTP_SECRET_KEY, or a key generated once into data_dir/secret_key."""
    key = settings.secret_key.get_secret_value()
    if key:
        return key
    return _stored_secret(Path(settings.data_dir) / SECRET_KEY_FILE, 48)[0]


def ensure_secrets(settings: Settings) -> list[str]:
    """Fill in the secrets left empty from the data dir, generating those missing (the
    fleet secret only in secure mode). Returns the names of the ones generated now."""
    generated = []
    if not settings.secret_key.get_secret_value():
        key, created = _stored_secret(Path(settings.data_dir) / SECRET_KEY_FILE, 48)
        settings.secret_key = SecretStr(key)
        if created:
            generated.append(SECRET_KEY_FILE)
    if settings.secure and not settings.provisioning_secret.get_secret_value():
        fleet, created = _stored_secret(Path(settings.data_dir) / FLEET_SECRET_FILE, 24)
        settings.provisioning_secret = SecretStr(fleet)
        if created:
            generated.append(FLEET_SECRET_FILE)
    return generated


def _stored_secret(path: Path, nbytes: int) -> tuple[str, bool]:
    """The secret kept in ``path``, or a new one written there (mode 0600). ``True``
    when it was created by this call."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


# ---- tokens (JWT, HS256) --------------------------------------------------------------

ALGORITHM = "HS256"
ISSUER = "iotp"


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int  # seconds


def issue_access_token(
    user: User, *, key: str, minutes: float, now: float | None = None
) -> AccessToken:
    """A signed access token; refresh tokens are opaque and stored (services.sessions)."""
    now = time.time() if now is None else now
    seconds = int(minutes * 60)
    claims = {
        "sub": str(user.id),
        "iss": ISSUER,
        "iat": int(now),
        "exp": int(now) + seconds,
        "ver": user.token_version,
        "typ": "access",
        "role": user.role,
    }
    return AccessToken(jwt.encode(claims, key, algorithm=ALGORITHM), seconds)


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
# A signed URL names the device and the command it was made for, so it cannot be used
# for another device (the signature covers both) and the server can refuse it once that
# command has ended (services.firmware.check_download_grant), well before ``exp``.


@dataclass(frozen=True, slots=True)
class DownloadGrant:
    """What a valid signed URL allows: one GET of its path, for this device's command."""

    device_id: str
    command_id: str
    expires: int


def _url_signature(path: str, device_id: str, command_id: str, expires: int, key: str) -> str:
    # Newlines separate the fields: none of them may contain one (ids are checked
    # at creation; the path comes from the router).
    msg = f"GET {path}\ndevice={device_id}\ncommand={command_id}\nexp={expires}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def sign_path(path: str, *, key: str, device_id: str, command_id: str, expires_at: float) -> str:
    """``path?device=..&command=..&exp=..&sig=..``: a GET of exactly this path, without
    a token, for this device's command, until ``exp`` (the key is
    resolve_secret_key(settings))."""
    expires = math.ceil(expires_at)
    sig = _url_signature(path, device_id, command_id, expires, key)
    query = urlencode({"device": device_id, "command": command_id, "exp": expires, "sig": sig})
    return f"{path}?{query}"


def verify_signed_path(
    path: str, query: Mapping[str, str], *, key: str, now: float | None = None
) -> DownloadGrant:
    """The grant of a signed URL; AuthError saying why it is refused otherwise."""
    device_id, command_id = query.get("device"), query.get("command")
    exp, sig = query.get("exp"), query.get("sig")
    if not device_id or not command_id or not exp or not sig:
        raise AuthError("a signed URL needs device, command, exp and sig")
    if not exp.isdigit() or len(exp) > 12:
        raise AuthError("exp must be epoch seconds")
    expected = _url_signature(path, device_id, command_id, int(exp), key)
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        raise AuthError("the signature does not match this path, device and command")
    if int(exp) < (time.time() if now is None else now):
        raise AuthError("the signed URL has expired")
    return DownloadGrant(device_id, command_id, int(exp))


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


@dataclass(frozen=True)
class LoginAttempt:
    """One sign-in attempt, recorded before its password is verified."""

    ids: tuple[int, ...]  # its rows in login_failures
    pair: str  # digest of the (user, address) key
    retry_after: float  # > 0: refused (HTTP 429), not verified
    delay: float  # seconds to wait before verifying (the user is under attack)


class LoginThrottle:
    """Sign-in attempts per (user, address), per address and per user, in a sliding
    window, stored in the database (``login_failures``) so that every API replica counts
    the same attempts.

    - (user, address): ``max_failures`` failures, then that address is refused for that
      user (HTTP 429) until the window moves on.
    - address: ``address_max_failures`` failures over all usernames (password spraying),
      then the address is refused.
    - user, over all addresses: never refused, since anyone could then lock the real
      user out; past ``max_failures`` each attempt waits before it is verified, doubling
      from a quarter second up to ``max_delay``.

    An attempt is recorded *before* its password is verified and then counted together
    with the attempts in flight, so parallel requests cannot each take a free guess. A
    successful sign-in removes its own rows and clears its (user, address) failures.
    Keys are stored as SHA-256 digests; expired rows are deleted as new attempts arrive.
    The caller commits."""

    BASE_DELAY = 0.25
    MAX_REMEMBERED = 10_000

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        address_max_failures: int | None = None,
        max_delay: float = 2.0,
    ) -> None:
        self.max_failures = max(1, max_failures)
        self.address_max_failures = max(1, address_max_failures or 4 * self.max_failures)
        self.window = window_seconds
        self.max_delay = max_delay
        # Refusals this process has answered, until when: a flood of refused attempts
        # costs no database reads (other replicas find the same rows in the table).
        self._refused: dict[str, float] = {}

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def _limits(self, address: str, username: str) -> list[tuple[str, int]]:
        return [
            (self._digest(f"pair:{username[:64]}\0{address}"), self.max_failures),
            (self._digest(f"ip:{address}"), self.address_max_failures),
        ]

    async def _count(self, session: AsyncSession, digest: str, now: float) -> int:
        counted = await session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(LoginFailure.key == digest, LoginFailure.at > now - self.window)
        )
        return int(counted or 0)

    async def _over(
        self, session: AsyncSession, limits: list[tuple[str, int]], now: float, margin: int
    ) -> dict[str, float]:
        """The keys over their limit, each with the time its oldest counted attempt
        leaves the window (``margin``: attempts in flight that are not in the table)."""
        over: dict[str, float] = {}
        for digest, limit in limits:
            oldest_counted = await session.scalar(
                select(LoginFailure.at)
                .where(LoginFailure.key == digest, LoginFailure.at > now - self.window)
                .order_by(LoginFailure.at.desc(), LoginFailure.id.desc())
                .offset(limit - margin)
                .limit(1)
            )
            if oldest_counted is not None:
                over[digest] = max(oldest_counted + self.window, now + 0.001)
        return over

    def _remember(self, over: dict[str, float], now: float) -> float:
        """Keep the refusal in memory; returns the seconds to wait."""
        if len(self._refused) + len(over) > self.MAX_REMEMBERED:
            self._refused = {k: t for k, t in self._refused.items() if t > now}
            if len(self._refused) + len(over) > self.MAX_REMEMBERED:
                self._refused.clear()
        self._refused.update(over)
        return max(over.values()) - now

    async def retry_after(
        self, session: AsyncSession, address: str, username: str, now: float | None = None
    ) -> float:
        """Seconds until this address may try this user again; 0 if allowed now."""
        now = time.time() if now is None else now
        over = await self._over(session, self._limits(address, username), now, margin=1)
        return max(over.values()) - now if over else 0.0

    async def attempt(
        self, session: AsyncSession, address: str, username: str, now: float | None = None
    ) -> LoginAttempt:
        """Check, record the attempt (committed, so that other requests and replicas see
        it), then count again together with the attempts in flight."""
        now = time.time() if now is None else now
        limits = self._limits(address, username)
        pair = limits[0][0]
        known = max(self._refused.get(digest, 0.0) for digest, _ in limits) - now
        if known > 0:
            return LoginAttempt((), pair, known, 0.0)
        over = await self._over(session, limits, now, margin=1)
        if over:
            return LoginAttempt((), pair, self._remember(over, now), 0.0)
        user = self._digest(f"user:{username[:64]}")
        await session.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window))
        rows = [LoginFailure(key=digest, at=now) for digest in (pair, limits[1][0], user)]
        session.add_all(rows)
        await session.flush()
        ids = tuple(row.id for row in rows)
        await session.commit()  # visible to parallel attempts before anything is verified
        over = await self._over(session, limits, now, margin=0)
        if over:  # parallel attempts took the last guesses: this one is refused
            await session.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))
            return LoginAttempt((), pair, self._remember(over, now), 0.0)
        earlier = await self._count(session, user, now) - 1
        excess = earlier - self.max_failures
        delay = 0.0 if excess < 0 else min(self.max_delay, self.BASE_DELAY * 2**excess)
        return LoginAttempt(ids, pair, 0.0, delay)

    async def succeeded(self, session: AsyncSession, attempt: LoginAttempt) -> None:
        await session.execute(
            delete(LoginFailure).where(
                (LoginFailure.key == attempt.pair) | LoginFailure.id.in_(attempt.ids)
            )
        )


# Niceness of the verification threads: above the event loop's, so that under a burst the
# CPU goes to ingest first and sign-ins take what is left.
VERIFY_THREAD_NICENESS = 10


def _lower_thread_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux schedules threads apart, so
    setpriority on its native id touches this thread only); elsewhere it is left as is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VERIFY_THREAD_NICENESS)


class PasswordVerifier:
    """Argon2 verification in worker threads of lower priority, at most ``concurrency``
    at a time: a burst of sign-ins neither blocks the event loop (which `iotp serve`
    shares with the worker's ingest) nor takes the CPU ingest needs."""

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, concurrency),
            thread_name_prefix="iotp-password",
            initializer=_lower_thread_priority,
        )

    async def verify(self, password: str, password_hash: str | None) -> bool:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, verify_password, password, password_hash)
