"""A lane against the simulator (tests/worker/helpers.py), and an ``AsyncClient``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from multipair.client import AsyncClient
from tests.worker.helpers import control, lane, paired_at_start, rig, sim

__all__ = ["client", "control", "lane", "paired_at_start", "rig", "sim"]


@pytest.fixture
async def client(redis: aioredis.Redis, key_prefix: str) -> AsyncIterator[AsyncClient]:
    """A client on the test session's Redis and the test's own key prefix."""
    async with AsyncClient(redis, prefix=key_prefix) as mp:
        yield mp
