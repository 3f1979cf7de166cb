"""Shared fixtures: one loaded Runtime per test process (models load once, like a server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cadence.agent.runtime import Runtime
from cadence.config import Profile


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    yield asyncio.run(Runtime.load(Profile()))
