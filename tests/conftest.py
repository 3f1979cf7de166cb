"""Shared fixtures: one loaded Runtime per test process (models load once, like a server)."""

from __future__ import annotations

import pytest_asyncio

from cadence.agent.runtime import Runtime
from cadence.config import Profile


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def runtime() -> Runtime:
    return await Runtime.load(Profile())
