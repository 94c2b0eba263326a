"""Firmware signing keys (Ed25519): the server's in the data dir, or offline in a file.

The server signs every unsigned bundle at upload with ``<data_dir>/signing/current.pem``
when it exists. ``next.pem``, while it exists, is the key the fleet rotates to: bundles
signed with the current key carry its public key (the device trusts it once that
version is confirmed); ``promote`` then makes it the current key. Devices get the public
key at flash time as ``ota_key.json`` (:func:`device_key_file`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from iotp.errors import InvalidRequestError
from iotp.services.manifest import key_id, public_bytes

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class SigningKeyError(InvalidRequestError):
    """A key file that is missing, unreadable or not an Ed25519 private key."""


def key_dir(data_dir: Path) -> Path:
    return data_dir / "signing"


def current_path(data_dir: Path) -> Path:
    return key_dir(data_dir) / "current.pem"


def next_path(data_dir: Path) -> Path:
    return key_dir(data_dir) / "next.pem"


def write_new_key(path: Path) -> Ed25519PrivateKey:
    """A new private key in path (PEM, PKCS#8, mode 0600); never overwrites a file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} exists: a key is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(f"no signing key at {path}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return key


def _optional(path: Path) -> Ed25519PrivateKey | None:
    return load_key(path) if path.exists() else None


def server_keys(data_dir: Path) -> tuple[Ed25519PrivateKey | None, Ed25519PrivateKey | None]:
    """(current key, next key) of this server; None where there is none."""
    return _optional(current_path(data_dir)), _optional(next_path(data_dir))


def promote(data_dir: Path) -> Ed25519PrivateKey:
    """The next key becomes the current one; the old current key is kept as
    ``retired-<key id>.pem``."""
    current, nxt = server_keys(data_dir)
    if nxt is None:
        raise SigningKeyError("there is no next key: create one with `iotp firmware keygen --next`")
    if current is not None:
        old = key_dir(data_dir) / f"retired-{key_id(public_bytes(current.public_key()))}.pem"
        current_path(data_dir).replace(old)
    next_path(data_dir).replace(current_path(data_dir))
    return nxt


def public_key_from(text: str) -> bytes:
    """A public key given as 64 hex characters, or a file: a private key (PEM) or a
    device key file (ota_key.json)."""
    if _HEX64.fullmatch(text.strip()):
        return bytes.fromhex(text.strip())
    path = Path(text)
    if not path.is_file():
        raise SigningKeyError(f"{text!r} is neither 64 hex characters nor a key file")
    raw = path.read_bytes()
    if raw.lstrip().startswith(b"{"):
        try:
            value = json.loads(raw)["key"]
        except (ValueError, KeyError, TypeError):
            raise SigningKeyError(f"{path} is not a device key file (ota_key.json)") from None
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise SigningKeyError(f"{path} holds no 64-hex-character key")
        return bytes.fromhex(value)
    return public_bytes(load_key(path).public_key())


def device_key_file(public_key: bytes, *, allow_unsigned: bool = False) -> bytes:
    """The ``ota_key.json`` a device is flashed with (firmware/iotfw/ota.py reads it)."""
    doc = {"key": public_key.hex(), "key_id": key_id(public_key), "allow_unsigned": allow_unsigned}
    return (json.dumps(doc, indent=1) + "\n").encode()
