"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.api.state import ApiState


async def get_state(request: Request) -> ApiState:
    # async: a plain def dependency would run in a thread pool on every request
    return state_of(request)


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.iotp
    return state


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with state_of(request).sessions() as session:
        yield session


StateDep = Annotated[ApiState, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
