"""The same fixtures as tests/conftest.py, on a real three-master Redis Cluster.

One cluster for the session (``multipair.embedded.RedisCluster``:
``redis-server --cluster-enabled yes`` on three loopback ports, slots spread
by ``redis-cli --cluster create``). ``redis_url`` names one node only, as
``MULTIPAIR_REDIS_URL`` would; every client in these tests (the test's own,
the lane processes', the client library's) starts from that URL and finds
the rest of the cluster itself. ``tests.worker.helpers.make_rig`` gives each
lane an id whose slot that node does *not* own, so the lanes work through
redirection, never by luck. The test modules here import the lane and client
tests themselves, so the very same tests run on the cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from multipair.embedded import RedisCluster, cluster_support_problem
from multipair.redis_conn import connect, is_cluster
from tests.redis_server import running_for_session
from tests.worker.helpers import control, lane, paired_at_start, rig, sim

# The worker tests imported here find their one-terminal, one-lane fixtures here.
__all__ = ["control", "lane", "paired_at_start", "rig", "sim"]


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """The session's three-master cluster (skips when this machine's Redis cannot make one)."""
    problem = cluster_support_problem()
    if problem is not None:
        pytest.skip(f"cannot start a Redis Cluster: {problem}")
    yield from running_for_session(RedisCluster(masters=3), "a Redis Cluster")


@pytest.fixture(scope="session")
def redis_url(redis_cluster: RedisCluster) -> str:
    """One node of the cluster (the first), as ``MULTIPAIR_REDIS_URL`` would name it."""
    return redis_cluster.urls[0]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A cluster client (bytes replies) from ``redis_url``, every master flushed; closed after."""
    client = await connect(redis_url)
    assert is_cluster(client)
    await client.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
    yield client
    await client.aclose()
