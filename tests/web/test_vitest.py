"""The dashboard's vitest suite, so `make test` covers it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import need

WEB = Path(__file__).resolve().parents[2] / "web"


def test_vitest_suite_passes() -> None:
    need(shutil.which("npm") is not None, "npm")
    need((WEB / "node_modules").is_dir(), "web/node_modules (run `npm ci` in web/)")
    result = subprocess.run(
        ["npm", "test", "--silent"], cwd=WEB, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
