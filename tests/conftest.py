from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import OPEN, SUPERVISED_STACKS, Stack, run_stack

STACKS = SUPERVISED_STACKS


@pytest.fixture(params=STACKS)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The platform on its default broker with SQLite, and with PostgreSQL; open mode on
    purpose (these tests are about ingest and control, not who may connect)."""
    async with run_stack(request.param, tmp_path, mode=OPEN) as s:
        yield s
