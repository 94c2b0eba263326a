"""Security tables: users, API keys, device MQTT credentials (migration 0003).

Kept apart from iotp.db.models so the security work and the device work do not edit
the same file; both share one ``Base``, so Alembic and the tests see every table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from iotp.db.models import Base, JsonType


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped on password change or delete: refresh tokens issued before stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """Only a SHA-256 of the key is stored (keys are 256-bit random, so a slow hash
    adds nothing); ``prefix`` identifies a key in lists and logs."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class DeviceCredential(Base):
    """A device's MQTT account: username = device id. ``secret_hash`` is in Mosquitto's
    PBKDF2-SHA512 ``$7$`` format, so the same row serves the embedded broker and the
    generated Mosquitto password_file. No foreign key to devices: a pending device has
    not sent any data yet."""

    __tablename__ = "device_credentials"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # pending (asked with the fleet secret) | approved | revoked
    status: Mapped[str] = mapped_column(String(16), index=True)
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    requested_at: Mapped[float | None] = mapped_column(Float)
    approved_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, index=True)
    # what the device shows too (services.credentials.fingerprint); None when issued
    fingerprint: Mapped[str | None] = mapped_column(String(16))
    # provisioning requests refused because another secret held the id
    conflicts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A foreign client's account (migration 0016): its mapping, and the topics it may
    # write and read ({"write": [...], "read": [...]}) instead of a device's own.
    adapter: Mapped[str | None] = mapped_column(String(32))
    acl: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


class LoginFailure(Base):
    """A failed sign-in (migration 0006), shared by every API replica so brute force
    over several replicas is slowed too. ``key`` is a SHA-256 of ``ip:<address>`` or
    ``user:<name>`` (attempted names are not stored in clear); rows older than the
    throttling window are deleted as new failures come in."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Float, index=True)


class RefreshToken(Base):
    """A refresh token (migration 0010): only its SHA-256 is stored. Each use replaces
    it by a new one of the same ``family`` (one sign-in); a token used a second time
    means it was copied, and its whole family is revoked. Logout revokes the family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    # The user's token_version at sign-in: a password or role change ends the family.
    token_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
