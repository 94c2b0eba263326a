"""Firmware bundles, the platform's side: the only module here that knows their layout
(the device's side is firmware/iotfw/bundle.py; docs/protocol.md, "Firmware bundles",
documents both).

    IOTPFW2 <manifest size> <signature size>\\n
    <manifest: canonical JSON, the bytes that are signed>
    <signature: empty (unsigned), or public key (32 bytes) + Ed25519 signature (64)>
    <the files' bytes, in manifest order; a file's .mpy variants follow its .py>

The manifest names the version, every file with its size and SHA-256 (and optional
precompiled ``.mpy`` variants with the MicroPython versions they target), the id of the
signing key and, for a key rotation, the next public key. Canonical JSON: keys sorted,
no spaces, ASCII; a bundle whose manifest is not canonical is refused, so one manifest
has exactly one byte form.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAGIC = "IOTPFW2"
FORMAT = 2
SIGNATURE_SIZE = 96
MAX_MANIFEST = 16 * 1024
MAX_FILES = 64
MAX_FILE_SIZE = 512 * 1024
# A device reads the manifest's file entries one at a time (firmware/iotfw/bundle.py
# MAX_ENTRY): the text of one, canonical, is at most this long.
MAX_ENTRY = 4096
_HEAD_RE = re.compile(rb"^IOTPFW2 (\d{1,6}) (\d{1,3})\n")
_PATH_PART_RE = re.compile(r"[A-Za-z0-9_.-]+")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleFormatError(ValueError):
    """The bytes are not a well-formed (or not a correctly signed) bundle."""


def key_id(public_key: bytes) -> str:
    """The id a key is known by: the first 8 bytes of the SHA-256 of its 32 bytes."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class BundleFile:
    """A file of the bundle: its .py bytes and precompiled variants
    (MicroPython versions such as "1.24" -> .mpy bytes)."""

    path: str
    data: bytes
    mpy: list[tuple[list[str], bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bundle:
    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes  # b"" or public key + signature
    body: bytes

    @property
    def version(self) -> str:
        version: str = self.manifest["version"]
        return version

    @property
    def key_id(self) -> str | None:
        """Id of the key that signed it (None: unsigned)."""
        return key_id(self.signature[:32]) if self.signature else None

    @property
    def next_key(self) -> str | None:
        """The public key (hex) devices rotate to once this version is confirmed."""
        value: str | None = self.manifest.get("next_key")
        return value

    @property
    def next_key_id(self) -> str | None:
        return None if self.next_key is None else key_id(bytes.fromhex(self.next_key))

    def to_bytes(self) -> bytes:
        head = f"{MAGIC} {len(self.manifest_bytes)} {len(self.signature)}\n".encode()
        return head + self.manifest_bytes + self.signature + self.body

    def sign(self, key: Ed25519PrivateKey, *, next_key: bytes | None = None) -> Bundle:
        """This bundle signed with key (its manifest names the key, and the next
        public key when one is given)."""
        public = public_bytes(key.public_key())
        manifest = {**self.manifest, "key_id": key_id(public)}
        manifest.pop("next_key", None)
        if next_key is not None:
            manifest["next_key"] = next_key.hex()
        data = canonical(manifest)
        return Bundle(manifest, data, public + key.sign(data), self.body)


def _valid_path(path: object) -> bool:
    return (
        isinstance(path, str)
        and 0 < len(path) <= 128
        and all(p not in ("", ".", "..") and _PATH_PART_RE.fullmatch(p) for p in path.split("/"))
    )


def _blob(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def build(version: str, files: list[BundleFile]) -> Bundle:
    """An unsigned bundle of these files."""
    entries: list[dict[str, Any]] = []
    body: list[bytes] = []
    for f in files:
        entry: dict[str, Any] = {"path": f.path, **_blob(f.data)}
        body.append(f.data)
        if f.mpy:
            entry["mpy"] = [{"micropython": list(t), **_blob(d)} for t, d in f.mpy]
            body.extend(d for _, d in f.mpy)
        entries.append(entry)
    manifest = {"format": FORMAT, "version": version, "key_id": "", "files": entries}
    _check_manifest(manifest)
    return Bundle(manifest, canonical(manifest), b"", b"".join(body))


def _check_blob(entry: Any, where: str) -> None:
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise BundleFormatError(f"bad size for {where}")
    if not isinstance(entry.get("sha256"), str) or not _HEX64.fullmatch(entry["sha256"]):
        raise BundleFormatError(f"bad sha256 for {where}")


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleFormatError(f"unknown manifest format (expected {FORMAT})")
    version = manifest.get("version")
    if (
        not isinstance(version, str)
        or not 0 < len(version) <= 64
        or any(c in version for c in " \n")
    ):
        raise BundleFormatError("bad version in the manifest")
    if manifest.get("key_id") != "" and not _HEX16.fullmatch(str(manifest.get("key_id"))):
        raise BundleFormatError("bad key_id in the manifest")
    if "next_key" in manifest and not _HEX64.fullmatch(str(manifest["next_key"])):
        raise BundleFormatError("bad next_key in the manifest")
    files = manifest.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise BundleFormatError(f"the manifest must list 1..{MAX_FILES} files")
    paths = set()
    for entry in files:
        if not isinstance(entry, dict) or not _valid_path(entry.get("path")):
            raise BundleFormatError("bad file entry in the manifest")
        path = entry["path"]
        _check_blob(entry, path)
        variants = entry.get("mpy", [])
        if not isinstance(variants, list) or (variants and not path.endswith(".py")):
            raise BundleFormatError(f"bad mpy variants for {path}")
        # a .py with variants may be installed as its .mpy: both names are its
        for name in [path, path[:-3] + ".mpy"] if variants else [path]:
            if name in paths:
                raise BundleFormatError(f"{name} is listed twice")
            paths.add(name)
        for variant in variants:
            targets = variant.get("micropython") if isinstance(variant, dict) else None
            if (
                not isinstance(targets, list)
                or not targets
                or not all(isinstance(t, str) and 0 < len(t) <= 16 for t in targets)
            ):
                raise BundleFormatError(f"an mpy variant of {path} names no MicroPython version")
            _check_blob(variant, path)
        if len(canonical(entry)) > MAX_ENTRY:
            raise BundleFormatError(
                f"the manifest's entry for {path} is longer than {MAX_ENTRY} bytes"
            )


def blobs(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every blob the body holds, in order: (path, {"size", "sha256", ...})."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in manifest["files"]:
        out.append((entry["path"], entry))
        out.extend((entry["path"][:-3] + ".mpy", v) for v in entry.get("mpy", []))
    return out


def parse(data: bytes) -> Bundle:
    """The bundle in data, checked whole: layout, canonical manifest, every file's size
    and SHA-256, and the signature (against the key it carries). Raises BundleFormatError."""
    head = _HEAD_RE.match(data[:32])
    if head is None:
        if data.startswith(b"IOTPFW"):
            raise BundleFormatError(
                "unsupported bundle format: build it again with `iotp firmware bundle`"
            )
        raise BundleFormatError("not a firmware bundle (it starts with IOTPFW2)")
    size, sig_size = int(head.group(1)), int(head.group(2))
    if not 0 < size <= MAX_MANIFEST:
        raise BundleFormatError(f"the manifest is larger than {MAX_MANIFEST} bytes")
    if sig_size not in (0, SIGNATURE_SIZE):
        raise BundleFormatError(f"the signature must be 0 or {SIGNATURE_SIZE} bytes")
    start = head.end()
    manifest_bytes = data[start : start + size]
    signature = data[start + size : start + size + sig_size]
    body = data[start + size + sig_size :]
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        raise BundleFormatError("the manifest is not JSON") from None
    _check_manifest(manifest)
    if canonical(manifest) != manifest_bytes:
        raise BundleFormatError("the manifest is not in canonical form")
    pos = 0
    for path, blob in blobs(manifest):
        chunk = body[pos : pos + blob["size"]]
        if len(chunk) != blob["size"] or hashlib.sha256(chunk).hexdigest() != blob["sha256"]:
            raise BundleFormatError(f"{path} does not match the manifest")
        pos += blob["size"]
    if pos != len(body):
        raise BundleFormatError("data after the last file")
    if signature:
        public = signature[:32]
        if manifest["key_id"] != key_id(public):
            raise BundleFormatError("the manifest names another key than its signer")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature[32:], manifest_bytes)
        except (InvalidSignature, ValueError):
            raise BundleFormatError(
                "bad signature: the manifest is not what its key signed"
            ) from None
    elif manifest["key_id"]:
        raise BundleFormatError("the manifest names a signing key but carries no signature")
    return Bundle(manifest, manifest_bytes, signature, body)
