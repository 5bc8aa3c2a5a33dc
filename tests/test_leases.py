"""Leases on a real Redis: one owner per lane, all of a host's renewals in one round trip."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.leases import Lease, LeaseKept, LeaseManager
from multipair.redis_conn import connect


def _lanes(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_renew_many_extends_ours_and_reports_the_ones_we_lost(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    keys = bs.Keys(key_prefix)
    ours = LeaseManager(redis, keys, "host-a", ttl_ms=2_000)
    theirs = LeaseManager(redis, keys, "host-b", ttl_ms=60_000)
    kept, lost, gone = _lanes(3)
    held = []
    for iid in (kept, lost, gone):
        lease = await ours.acquire(iid)
        assert lease is not None
        held.append((iid, lease))
    # `lost` moves to another host; `gone` expires (deleted here).
    await ours.release(lost, held[1][1])
    assert await theirs.acquire(lost) is not None
    await redis.delete(keys.lease(gone))
    await redis.pexpire(keys.lease(kept), 100)

    results = await ours.renew_many(held)

    assert [True, False, False] == results
    assert 1_500 < await redis.pttl(keys.lease(kept)) <= 2_000  # extended to the full TTL
    assert Lease(held[1][1].token + 1, "host-b") == await ours.read(lost)  # theirs untouched
    assert await redis.exists(keys.lease(gone)) == 0  # not recreated
    assert [] == await ours.renew_many([])


async def test_renewing_a_thousand_leases_takes_one_connection(
    redis: aioredis.Redis, redis_url: str, key_prefix: str
) -> None:
    """What stopped a host at ~250 lanes: one concurrent call per lease ran out of connections."""
    name = f"renew-{key_prefix}"
    client = await connect(redis_url, max_connections=8, client_name=name)
    try:
        manager = LeaseManager(client, bs.Keys(key_prefix), "host-a")
        held = []
        for iid in _lanes(1_000):
            lease = await manager.acquire(iid)
            assert lease is not None
            held.append((iid, lease))

        results = await manager.renew_many(held)

        assert [True] * 1_000 == results
        connections = [c for c in await redis.client_list() if c.get("name") == name]
        assert 1 == len(connections)
    finally:
        await client.aclose()


async def test_a_bounded_pool_waits_for_a_free_connection_instead_of_failing(
    redis_url: str,
) -> None:
    client = await connect(redis_url, max_connections=2)
    try:
        # Two blocking reads hold both connections for 0.3 s; the third call waits.
        stream = f"t{uuid.uuid4().hex}"
        *_, pong = await asyncio.gather(
            client.xread({stream: "$"}, block=300),
            client.xread({stream: "$"}, block=300),
            client.ping(),
        )
        assert pong is True  # redis-py's default pool raises "Too many connections" here
    finally:
        await client.aclose()


async def test_keep_many_takes_back_a_lapsed_lease_only_while_the_fence_holds_our_token(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    """Issue 13: after a Redis outage longer than the TTL, same token, unless someone took it."""
    keys = bs.Keys(key_prefix)
    ours = LeaseManager(redis, keys, "host-a", ttl_ms=2_000)
    held_alive, lapsed, taken, taken_back = _lanes(4)
    held = []
    for iid in (held_alive, lapsed, taken, taken_back):
        lease = await ours.acquire(iid)
        assert lease is not None
        held.append((iid, lease))
    await redis.pexpire(keys.lease(held_alive), 100)
    await redis.delete(keys.lease(lapsed))  # expired while Redis was away: nobody took it
    await redis.delete(keys.lease(taken))
    other = await LeaseManager(redis, keys, "host-b", ttl_ms=60_000).acquire(taken)
    await redis.delete(keys.lease(taken_back))
    await redis.incr(keys.fence(taken_back))  # taken and given back meanwhile

    results = await ours.keep_many(held)

    assert [LeaseKept.RENEWED, LeaseKept.RETAKEN, LeaseKept.LOST, LeaseKept.LOST] == results
    assert held[1][1] == await ours.read(lapsed)  # the same token:host again
    assert 1_500 < await redis.pttl(keys.lease(lapsed)) <= 2_000
    assert other == await ours.read(taken)
    assert None is await ours.read(taken_back)
    assert [] == await ours.keep_many([])


async def test_keep_many_on_a_new_primary_that_lost_the_fence_sets_it_to_our_token_again(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    """Issue 19: a promoted replica lacks the fence's latest increments (and the lease). The
    lease is taken back and the fence set to our token again, so the next owner draws a
    larger token than every one in use."""
    keys = bs.Keys(key_prefix)
    ours = LeaseManager(redis, keys, "host-a", ttl_ms=2_000)
    lost_fence, no_fence = _lanes(2)
    held = []
    for iid in (lost_fence, no_fence):
        await redis.set(keys.fence(iid), 2)  # tokens 1 and 2 came and went; 3 is ours
        lease = await ours.acquire(iid)
        assert lease is not None
        held.append((iid, lease))
    # What the new primary holds: the fence as it was before our increment, no lease.
    for iid, lease in held:
        await redis.delete(keys.lease(iid))
        await redis.set(keys.fence(iid), lease.token - 1)
    await redis.delete(keys.fence(no_fence))

    assert [LeaseKept.RESTORED, LeaseKept.RESTORED] == await ours.keep_many(held)
    for iid, lease in held:
        assert lease == await ours.read(iid)
        fence: Any = await redis.get(keys.fence(iid))
        assert lease.token == int(fence)
        await ours.release(iid, lease)
        following = await LeaseManager(redis, keys, "host-b").acquire(iid)
        assert following is not None
        assert following.token == lease.token + 1
