"""After a failover to a replica that lacks the latest writes, a lane reconciles (issue 19).

Three Sentinels, a primary and one replica, a supervisor and its lane, the
simulator. The replica is frozen (SIGSTOP) and its link dropped so it misses
the lane's latest writes, the primary is killed (-9) with a purchase in flight, the replica
resumes and is promoted. The lane notices the new primary, writes back what
it lost, and the command gets exactly one ``transaction_completed`` with the
terminal's outcome; the terminal saw the pos_ref_id once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from multipair.exceptions import RetryLater
from multipair.redis_conn import connect, redis_errors
from multipair.simulator import Simulator
from tests import supervisor_rig
from tests.poll import poll_until
from tests.redis_server import RedisServer
from tests.sentinel_servers import SentinelDeployment
from tests.supervisor.helpers import Fleet, Lane
from tests.worker.helpers import Body

sim = supervisor_rig.sim
APPROVE = 1000
SLOW = 1254  # 54 cents: a slow card, approved after about 3 s


@pytest.fixture
def terminals() -> int:
    return 1


deployment = supervisor_rig.sentinel_deployment  # resumes a node left frozen
fleet = supervisor_rig.sentinel_fleet


async def _events(url: str, lane: Lane) -> list[Body]:
    """Every event of the lane on the primary that stands (riding out the failover)."""

    async def read() -> list[Body] | None:
        client = await connect(url)
        try:
            with redis_errors():
                raw: Any = await client.xrange(lane.keys.events(lane.instance_id))
            return [orjson.loads(fields[b"body"]) for _, fields in raw]
        except RetryLater:
            return None
        finally:
            await client.aclose()

    return await poll_until(read, "a primary answering", 30, interval=0.2)


def _cut_off(deployment: SentinelDeployment, replica: RedisServer) -> None:
    """Freeze the replica and drop its link: it takes nothing the primary writes from now on.

    SIGSTOP alone is not enough: the kernel keeps taking the replication stream
    into the frozen replica's socket, and it would read it all on SIGCONT.
    """
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    with redis.Redis.from_url(deployment.primary().url) as primary:
        primary.execute_command("CLIENT", "KILL", "TYPE", "replica")


async def _purchase_across(lane: Lane, ref: str) -> Body:
    async def purchase() -> Body | None:
        try:
            with redis_errors():
                return await lane.purchase(ref, APPROVE, timeout=40)
        except RetryLater:
            return None

    return await poll_until(purchase, f"the purchase {ref} answered", 40, interval=0.2)


@pytest.mark.parametrize("min_replicas", [0, 1])
async def test_a_purchase_in_flight_completes_once_on_a_new_primary_that_lost_its_writes(
    fleet: Fleet, deployment: SentinelDeployment, sim: Simulator, min_replicas: int
) -> None:
    sup = fleet.supervisor("host-a")
    sup.env.update(
        {"MULTIPAIR_REDIS_MIN_REPLICAS": str(min_replicas), "MULTIPAIR_REDIS_WAIT_MS": "200"}
    )
    await sup.start()
    lane = await fleet.add_lane(0)
    pid = await lane.running(timeout=40)
    assert "success" == (await lane.purchase("f-1", APPROVE))["result"]
    deployment.wait_replicated()
    replica = next(n for n in deployment.nodes if n is not deployment.primary())
    assert replica.pid is not None
    terminal = sim.terminals[0]
    started = time.monotonic()
    if min_replicas == 0:
        # Frozen before the command: the new primary will lack the command, its
        # record, its claim and its command_accepted.
        _cut_off(deployment, replica)
        command_id = await lane.send(
            {"type": "purchase", "pos_ref_id": "f-2", "amount_cents": SLOW}
        )
        await poll_until(lambda: terminal.stats.purchase_requests["f-2"] == 1, timeout=10)
    else:
        # With a replica to wait for nothing is sent before the record is on it;
        # frozen once the request left: the new primary lacks the outcome.
        command_id = await lane.send(
            {"type": "purchase", "pos_ref_id": "f-2", "amount_cents": SLOW}
        )
        await poll_until(lambda: terminal.stats.purchase_requests["f-2"] == 1, timeout=10)
        _cut_off(deployment, replica)

    async def completed() -> list[Body] | None:
        found = [
            b
            for b in await _events(deployment.url, lane)
            if b["type"] == "transaction_completed" and b.get("pos_ref_id") == "f-2"
        ]
        return found or None

    if min_replicas > 0:
        # The outcome reaches the lane and lands on the primary only.
        await poll_until(completed, "the outcome on the old primary", timeout=20)
    old = deployment.kill_primary()
    os.kill(replica.pid, signal.SIGCONT)
    deployment.wait_for_failover(old)

    await poll_until(completed, "the outcome on the new primary", timeout=40)
    print(f"outcome on the new primary {time.monotonic() - started:.2f} s after the send")
    await asyncio.sleep(1.0)  # nothing more comes
    done = await completed()
    assert done is not None
    assert 1 == len(done), done
    assert ("success", command_id) == (done[0]["result"], done[0]["command_id"])
    assert 1 == terminal.stats.purchase_requests["f-2"]
    events = await _events(deployment.url, lane)
    rejected = [
        b for b in events if b.get("command_id") == command_id and b["type"] == "command_rejected"
    ]
    assert [] == rejected
    assert "a new Redis primary: re-reading" in sup.logs()
    # The lane rode it out and goes on serving (with a replica again to wait for).
    deployment.restart_as_replica(old)
    assert "success" == (await _purchase_across(lane, "f-3"))["result"]
    assert str(pid) == (await lane.state())["pid"]
    assert 1 == terminal.stats.purchase_requests["f-2"]
    record: Any = await _record(deployment.url, lane, "f-2")
    assert ("completed", "success") == (record.get("state"), record.get("result"))


async def _record(url: str, lane: Lane, ref: str) -> dict[str, str]:
    client: aioredis.Redis = await connect(url)
    try:
        raw: Any = await client.hgetall(lane.keys.tx(lane.instance_id, ref))
        return {k.decode(): v.decode() for k, v in raw.items()}
    finally:
        await client.aclose()
