"""ReplicaWait and the lease rule against a real primary and replica."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.leases import LeaseManager
from multipair.store.durable import SYNC_FIELD, Durability, ReplicaWait, replica_wait
from multipair.supervisor.lanes import lease_confirmed
from tests.replication.servers import ReplicatedPair

ONE = Durability(min_replicas=1, wait_ms=200)


def test_no_replica_wanted_means_no_replica_wait(primary: aioredis.Redis) -> None:
    assert None is replica_wait(primary, Durability())


async def test_a_write_is_confirmed_by_the_running_replica(
    primary: aioredis.Redis, replica: aioredis.Redis
) -> None:
    keys = bs.Keys("t")
    iid = str(uuid.uuid4())
    await primary.set(keys.fence(iid), "7")
    wait = ReplicaWait(primary, ONE)
    assert 1 == await wait.confirm(keys.writes(iid))
    # Redis 7.0 has no WAITAOF: detected once, WAIT from then on.
    assert 1 == await wait.confirm(keys.writes(iid))
    assert b"7" == await replica.get(keys.fence(iid))
    # Three sync writes: the first try asked WAITAOF (refused), then WAIT twice.
    assert b"3" == await replica.hget(keys.writes(iid), SYNC_FIELD)


async def test_a_paused_replica_confirms_nothing(
    primary: aioredis.Redis, pair: ReplicatedPair
) -> None:
    wait = ReplicaWait(primary, ONE)
    writes = bs.Keys("t").writes(str(uuid.uuid4()))
    with pair.paused():
        assert 0 == await wait.confirm(writes)
    assert 1 == await wait.confirm(writes)


async def test_a_lease_whose_token_is_not_confirmed_is_released_unused(
    primary: aioredis.Redis, pair: ReplicatedPair
) -> None:
    keys = bs.Keys("t")
    iid = str(uuid.uuid4())
    leases = LeaseManager(primary, keys, "host-a")
    wait = ReplicaWait(primary, ONE)
    with pair.paused():
        lease = await leases.acquire(iid)
        assert lease is not None
        assert not await lease_confirmed(leases, wait, iid, lease)
        assert None is await leases.read(iid)  # released: nobody runs under that token
    again = await leases.acquire(iid)
    assert again is not None
    assert again.token > lease.token  # a new token, strictly larger
    assert await lease_confirmed(leases, wait, iid, again)
    assert again == await leases.read(iid)


async def test_without_replicas_wanted_a_lease_is_used_at_once(primary: aioredis.Redis) -> None:
    keys = bs.Keys("t")
    iid = str(uuid.uuid4())
    leases = LeaseManager(primary, keys, "host-a")
    lease = await leases.acquire(iid)
    assert lease is not None
    assert await lease_confirmed(leases, None, iid, lease)
