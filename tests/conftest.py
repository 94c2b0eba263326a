from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import Stack, run_stack

STACKS = ["embedded-sqlite", "mosquitto-postgres"]


@pytest.fixture(params=STACKS)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The platform on embedded defaults, and on Mosquitto + PostgreSQL."""
    async with run_stack(request.param, tmp_path) as s:
        yield s
