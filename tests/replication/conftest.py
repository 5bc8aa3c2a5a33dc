"""Fixtures of the durable-write tests: a primary with one replica, the simulator, a lane."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.redis_server import find_redis_server
from tests.replication.servers import ReplicatedPair, replicated_pair
from tests.simulator.helpers import seed_paired_state

SERIAL = "SIM-0001"


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    """A primary and its replica for the module's tests."""
    if find_redis_server() is None:
        pytest.skip("no redis-server on PATH: cannot test replication")
    with replicated_pair() as servers:
        yield servers


@pytest.fixture
async def primary(pair: ReplicatedPair) -> AsyncIterator[aioredis.Redis]:
    """A client of the primary, on an empty database, the replica running and linked."""
    pair.resume_replica()
    client = aioredis.Redis.from_url(pair.url)
    await client.flushall()
    pair.wait_linked()
    yield client
    pair.resume_replica()
    await client.aclose()


@pytest.fixture
async def replica(pair: ReplicatedPair) -> AsyncIterator[aioredis.Redis]:
    """A client of the replica (reads only)."""
    client = aioredis.Redis.from_url(pair.replica_url)
    yield client
    await client.aclose()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    state_dir = tmp_path / "sim"
    seed_paired_state(state_dir, SERIAL)  # the terminal already knows POS1 with KEYS
    async with Simulator(1, state_dir=state_dir) as simulator:
        yield simulator
