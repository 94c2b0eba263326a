"""Runs the firmware's pure-module tests inside real MicroPython under node.

The WebAssembly port comes from the npm package pinned in
tests/firmware/micropython/package.json (`npm ci --prefix tests/firmware/micropython`).
Outside CI a missing node or package skips; with CI=true it fails.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUNNER_DIR = HERE / "micropython"
PACKAGE = RUNNER_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
FIRMWARE_DIR = HERE.parents[1] / "firmware"


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def test_pure_modules_pass_on_micropython() -> None:
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed")
    if not (PACKAGE / "micropython.mjs").exists():
        _missing("run `npm ci --prefix tests/firmware/micropython` first")
    proc = subprocess.run(
        [node, str(RUNNER_DIR / "run.mjs"), str(FIRMWARE_DIR), str(HERE / "pure")],
        cwd=RUNNER_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert "micropython" in output, output
    assert proc.returncode == 0, output
    assert " 0 failed" in output.splitlines()[-1] or " 0 failed" in output, output
