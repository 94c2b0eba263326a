"""`iotp status`: a summary read from the database, human or JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "IOTP_DATA_DIR": str(tmp_path), "IOTP_LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-m", "iotp.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_status_reads_the_database(tmp_path: Path) -> None:
    run(tmp_path, "db", "upgrade")
    data = json.loads(run(tmp_path, "status", "--json"))
    assert data["devices"]["total"] == 0
    assert data["fleet"]["workers"] == 0
    assert data["storage"]["partitioned"] is False
    text = run(tmp_path, "status")
    assert text.startswith("devices     0 total")
