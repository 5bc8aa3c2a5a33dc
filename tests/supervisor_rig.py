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

``sentinel_deployment`` and ``sentinel_fleet`` are the same on a Sentinel
deployment of the test's own (one it may kill the primary of), both
passwords set; a module takes them under the names its tests ask for::

    deployment = supervisor_rig.sentinel_deployment  # the name sentinel_fleet asks for
    fleet = supervisor_rig.sentinel_fleet
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair.redis_conn import connect
from multipair.simulator import Simulator
from tests.sentinel_servers import SentinelDeployment, start_deployment
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


@pytest.fixture
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    """A Sentinel deployment of the test's own (a primary, a replica, three Sentinels);
    a node a test left frozen (SIGSTOP) is resumed first: stop() would wait for it."""
    started = start_deployment()
    yield started
    for node in started.nodes:
        if node.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGCONT)
    started.stop()


@pytest.fixture
async def sentinel_fleet(
    deployment: SentinelDeployment, tmp_path: Path, sim: Simulator
) -> AsyncIterator[Fleet]:
    """:func:`fleet` on ``deployment`` (a key prefix of its own)."""
    client = await connect(deployment.url)
    fleet = Fleet(client, deployment.url, f"t{uuid.uuid4().hex[:12]}", tmp_path, sim)
    try:
        yield fleet
    finally:
        await fleet.close()
        await client.aclose()
        gc.collect()  # the dropped connections' warnings land here, under the test's filters
