"""Fuzz every operation of the OpenAPI schema with schemathesis against a running stack
(signed in as admin): no input may produce a server error. IOTP_FUZZ_EXAMPLES sets the
examples per operation (default: small, to keep the suite fast)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import OPEN, need, run_stack

EXAMPLES = int(os.environ.get("IOTP_FUZZ_EXAMPLES", "5"))
# Operations that would sign the fuzzer itself out (it keeps its token otherwise).
EXCLUDE = r"^/api/auth/password$"


def _st() -> str | None:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    return found or shutil.which("st")


@pytest.mark.slow
async def test_openapi_fuzz_has_no_server_errors(tmp_path: Path) -> None:
    st = _st()
    need(st is not None, "schemathesis (pip install schemathesis)")
    assert st is not None
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, login_max_failures=1000) as stack:
        cmd = [
            st,
            "run",
            f"{stack.api_url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {stack.token}",
            "--max-examples",
            str(EXAMPLES),
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--exclude-path-regex",
            EXCLUDE,
            "--continue-on-failure",
            "--warnings",
            "off",
        ]
        proc = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=600, check=False
        )
    output = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, output
