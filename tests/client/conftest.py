"""A running lane against the simulator, and an ``AsyncClient`` on the test's prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair.client import AsyncClient
from multipair.simulator import Simulator
from tests.simulator.helpers import KEYS, seed_paired_state
from tests.worker.helpers import LaneRig, make_rig

SERIAL = "SIM-0001"


@pytest.fixture
async def client(redis: aioredis.Redis, key_prefix: str) -> AsyncIterator[AsyncClient]:
    """A client on the test session's Redis and the test's own key prefix."""
    async with AsyncClient(redis, prefix=key_prefix) as mp:
        yield mp


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    """One simulated terminal that already knows POS1 with the test keys."""
    state_dir = tmp_path / "sim"
    seed_paired_state(state_dir, SERIAL)
    async with Simulator(1, state_dir=state_dir) as simulator:
        yield simulator


@pytest.fixture
async def idle_lane(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path, sim: Simulator
) -> AsyncIterator[LaneRig]:
    """A paired lane whose process is not started (tests start it when they need)."""
    rig = await make_rig(
        redis, redis_url, key_prefix, tmp_path, address=sim.terminals[0].ws_url, secrets=KEYS
    )
    yield rig
    await rig.process.kill()


@pytest.fixture
async def lane(idle_lane: LaneRig) -> LaneRig:
    """A paired lane, running and connected to its terminal."""
    await idle_lane.process.start()
    await idle_lane.wait_state(status="paired_connected")
    return idle_lane
