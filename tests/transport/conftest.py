"""Transport fixtures: one Runtime loaded in the session-wide event loop the servers run on.

Sessions are measurably slower and flakier when the models were loaded and warmed in a
loop that is gone (tests/conftest.py's `asyncio.run`), so these tests load in their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from cadence.agent.runtime import Runtime
from cadence.config import Profile


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def loop_runtime() -> AsyncIterator[Runtime]:
    yield await Runtime.load(Profile())
