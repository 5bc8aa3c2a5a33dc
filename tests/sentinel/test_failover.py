"""The primary moves and the clients follow: a kill -9 and a coordinated failover, from a bare
client to a lane under a real supervisor (each test starts a deployment of its own)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ReadOnlyError

from multipair.exceptions import RetryLater
from multipair.redis_conn import connect, redis_errors
from tests import supervisor_rig
from tests.poll import poll_until
from tests.sentinel_servers import SentinelDeployment
from tests.supervisor.helpers import Fleet, Lane
from tests.worker.helpers import Body

sim = supervisor_rig.sim
APPROVE = 1000


@pytest.fixture
def terminals() -> int:
    return 1


deployment = supervisor_rig.sentinel_deployment
sentinel_fleet = supervisor_rig.sentinel_fleet


async def _write_until_it_lands(client: aioredis.Redis, key: str, timeout: float = 30) -> int:
    """SET until it succeeds; every failure on the way must be RetryLater. The failures."""
    failures = 0

    async def landed() -> bool:
        nonlocal failures
        try:
            with redis_errors():
                await client.set(key, "after")
        except RetryLater:
            failures += 1
            return False
        return True

    await poll_until(landed, "the client reaching the new primary", timeout, interval=0.1)
    return failures


async def test_a_client_rides_out_a_kill_9_of_the_primary_and_writes_to_the_new_one(
    deployment: SentinelDeployment,
) -> None:
    client = await connect(deployment.url, max_connections=4, socket_timeout=2)
    try:
        await client.set("before", "1")
        deployment.wait_replicated()
        old = deployment.kill_primary()
        killed_at = time.monotonic()
        await _write_until_it_lands(client, "after")
        print(f"writes landed {time.monotonic() - killed_at:.2f} s after the kill -9")
        new = deployment.wait_for_failover(old)
        assert new != old
        assert b"1" == await client.get("before")  # replicated before the kill
        with redis.Redis.from_url(deployment.node_on(new).url) as primary:
            assert b"after" == primary.get("after")
        deployment.restart_as_replica(old)
    finally:
        await client.aclose()


async def test_a_demoted_primary_answering_readonly_sends_the_client_to_the_new_one(
    deployment: SentinelDeployment,
) -> None:
    client = await connect(deployment.url, max_connections=1, socket_timeout=2)
    try:
        await client.set("k", "0")  # the one pooled connection is on the old primary now
        old = deployment.primary()
        assert old.port is not None
        with deployment.sentinels[0].client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", deployment.master_name)
        new = deployment.wait_for_failover(old.port)
        with redis.Redis.from_url(old.url, decode_responses=True) as demoted:

            def replica() -> bool:
                try:
                    return "slave" == str(demoted.info("replication")["role"])
                except redis.exceptions.ConnectionError:
                    return False  # Sentinel drops its clients as it turns it into a replica

            await poll_until(replica, "the old primary a replica", 20)
        failures = await _write_until_it_lands(client, "k")
        assert failures <= 1  # at most the READONLY of the kept connection
        with redis.Redis.from_url(deployment.node_on(new).url) as primary:
            assert b"after" == primary.get("k")
    finally:
        await client.aclose()


async def test_readonly_from_a_plain_replica_is_retry_later(
    deployment: SentinelDeployment,
) -> None:
    replica = next(n for n in deployment.nodes if n is not deployment.primary())
    client = aioredis.Redis.from_url(replica.url)
    try:
        with pytest.raises(ReadOnlyError):
            await client.set("x", "1")
        with pytest.raises(RetryLater, match="answered as a replica"), redis_errors():
            await client.set("x", "1")
    finally:
        await client.aclose()


async def _completed(fleet: Fleet, lane: Lane) -> list[str]:
    raw: Any = await fleet.redis.xrange(lane.keys.events(lane.instance_id))
    bodies: list[Body] = [orjson.loads(fields[b"body"]) for _, fields in raw]
    return [b["pos_ref_id"] for b in bodies if b["type"] == "transaction_completed"]


async def test_a_lane_under_a_supervisor_serves_purchases_across_a_failover(
    sentinel_fleet: Fleet, deployment: SentinelDeployment
) -> None:
    fleet = sentinel_fleet
    sup = fleet.supervisor("host-a")
    await sup.start()
    lane = await fleet.add_lane(0)
    pid = await lane.running(timeout=60)
    assert "success" == (await lane.purchase("s-1", APPROVE))["result"]
    deployment.wait_replicated()

    old = deployment.kill_primary()
    killed_at = time.monotonic()
    deployment.wait_for_failover(old)

    async def purchase_after() -> Body | None:
        try:  # the test's own client rides the failover like any POS backend
            with redis_errors():
                return await lane.purchase("s-2", APPROVE, timeout=60)
        except RetryLater:
            return None

    answered = await poll_until(purchase_after, "the purchase after the failover", 60, interval=0.2)
    print(f"purchase answered {time.monotonic() - killed_at:.2f} s after the kill -9")
    assert "success" == answered["result"]
    assert ["s-1", "s-2"] == await _completed(fleet, lane)  # each exactly once
    assert str(pid) == (await lane.state())["pid"]  # the lane rode it out, no restart
    deployment.restart_as_replica(old)
