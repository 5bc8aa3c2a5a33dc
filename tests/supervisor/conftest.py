"""A simulator with five terminals already paired with POS1 (test keys), and a fleet on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.simulator.helpers import paired_simulator
from tests.supervisor.helpers import Fleet

TERMINALS = 5


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with paired_simulator(tmp_path / "sim", TERMINALS) as simulator:
        yield simulator


@pytest.fixture
async def fleet(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path, sim: Simulator
) -> AsyncIterator[Fleet]:
    """Lanes are added by each test (``fleet.add_lane(i)``); supervisors killed at the end."""
    fleet = Fleet(redis, redis_url, key_prefix, tmp_path, sim)
    try:
        yield fleet
    finally:
        await fleet.close()
