"""A simulator of terminals already paired with POS1 (test keys), and a fleet of supervisors on it.

The fixtures of tests/supervisor, tests/failover and tests/console, in one
place. A conftest takes them as its own and says how many terminals it
wants with a ``terminals`` fixture::

    from tests import supervisor_rig

    sim = supervisor_rig.sim
    fleet = supervisor_rig.fleet


    @pytest.fixture
    def terminals() -> int:
        return 5
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.simulator.helpers import paired_simulator
from tests.supervisor.helpers import Fleet


@pytest.fixture
async def sim(tmp_path: Path, terminals: int) -> AsyncIterator[Simulator]:
    """``terminals`` simulated terminals, paired with POS1."""
    async with paired_simulator(tmp_path / "sim", terminals) as simulator:
        yield simulator


@pytest.fixture
async def fleet(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path, sim: Simulator
) -> AsyncIterator[Fleet]:
    """Lanes and supervisors are added by each test; supervisors are killed at the end."""
    fleet = Fleet(redis, redis_url, key_prefix, tmp_path, sim)
    try:
        yield fleet
    finally:
        await fleet.close()
