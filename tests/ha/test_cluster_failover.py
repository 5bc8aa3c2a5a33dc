"""Issue 19 on a Redis Cluster with replicas: a master killed, a manual failover, under load.

Three masters and three replicas (tests/ha/cluster.py, node timeout
1000 ms); four lanes under one supervisor with
``MULTIPAIR_REDIS_MIN_REPLICAS=1`` (the ``WAIT`` goes to the node owning the
lane's slot); the raw-Redis POS driver of tests/ha/pos.py. Three rounds:

1. ``kill -9`` of the master serving lane 0's slot while every terminal
   holds a request; its replica takes over; the killed node is started
   again and rejoins as a replica;
2. ``CLUSTER FAILOVER`` on the replica of the master serving lane 1's slot,
   right as a transaction finishes (outcomes being written);
3. ``kill -9`` of the master serving lane 2's slot right after a purchase
   is sent (records being written).

The same checks as on Sentinel (tests/ha/pos.py ``verdict``), and every lane
completes a new purchase within ``BOUND_S`` of the promotion.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from multipair.embedded import cluster_support_problem
from multipair.redis_conn import connect
from multipair.simulator import Simulator
from tests.ha.cluster import ReplicatedCluster
from tests.ha.pos import UNCLOSED_TO_A_DEAD_PRIMARY, Pos, final_events, terminal_truth, verdict
from tests.ha.rig import Round, amount_mix, arm, release, start_supervised
from tests.redis_server import RedisServerError
from tests.supervisor.helpers import Fleet

LANES = 4
BOUND_S = 10.0
ANSWER_TIMEOUT_S = 60.0
ROUNDS = (("at_terminal", "kill", 0), ("outcomes", "manual", 1), ("records", "kill", 2))

pytestmark = [pytest.mark.timeout(240), *UNCLOSED_TO_A_DEAD_PRIMARY]


@pytest.fixture
def cluster() -> Iterator[ReplicatedCluster]:
    problem = cluster_support_problem()
    if problem is not None:
        pytest.skip(f"cannot start a Redis Cluster: {problem}")
    started = ReplicatedCluster()
    try:
        started.start()
    except RedisServerError as exc:
        started.stop()
        pytest.fail(f"could not start a Redis Cluster with replicas: {exc}")
    yield started
    started.stop()


@pytest.fixture
async def fleet(cluster: ReplicatedCluster, tmp_path: Path, sim: Simulator) -> AsyncIterator[Fleet]:
    client = await connect(cluster.url)
    fleet = Fleet(client, cluster.url, f"t{uuid.uuid4().hex[:12]}", tmp_path, sim)
    try:
        yield fleet
    finally:
        await fleet.close()
        await client.aclose()
        gc.collect()


async def test_a_killed_master_and_a_manual_failover_lose_and_double_nothing(
    fleet: Fleet, cluster: ReplicatedCluster, sim: Simulator
) -> None:
    _, lanes = await start_supervised(fleet, LANES, MULTIPAIR_REDIS_MIN_REPLICAS="1")
    rounds: list[Round] = []
    with capture_logs() as logs:
        pos = Pos(
            fleet.redis, fleet.keys, [lane.instance_id for lane in lanes], amount=amount_mix(7)
        )
        pos.start()
        await asyncio.sleep(1.0)
        for step, how, index in ROUNDS:
            master = cluster.owner_of(fleet.keys.commands(lanes[index].instance_id))
            replica = cluster.replica_of(master)
            await arm(step, pos, sim)
            if how == "kill":
                cluster.kill(master)
            else:
                cluster.manual_failover(replica)
            started = time.monotonic()
            release(step, sim)
            await asyncio.to_thread(cluster.wait_master, replica)
            promoted = time.monotonic()
            if how == "kill":
                await asyncio.to_thread(cluster.node_on(master).start)
            done = Round(f"{step} ({how})", promoted - started)
            done.promotion_to_answered_s = await pos.wait_answered_again(promoted, ANSWER_TIMEOUT_S)
            rounds.append(done)
            await asyncio.to_thread(cluster.wait_replicas_linked)
            await asyncio.sleep(0.5)
        await pos.stop()
        client = await connect(cluster.url)
        try:
            events = await final_events(client, fleet.keys, pos.instance_ids)
        finally:
            await client.aclose()
        truth = terminal_truth(logs)
    found = verdict(pos, events, sim, truth)
    print(
        "\ncluster failover figures:",
        orjson.dumps(
            {"rounds": [r.as_json() for r in rounds], **found.as_json()},
            option=orjson.OPT_INDENT_2,
        ).decode(),
    )
    found.assert_money_held(at_least=20)
    # No lane exits: a lane blocked on XREADGROUP at a master that CLUSTER FAILOVER
    # demotes gets UNBLOCKED and reads again at the new master.
    crashed = [e for e in events if e.get("type") == "lane_crashed"]
    assert [] == [e.get("cause") for e in crashed]
    for done in rounds:
        assert max(done.promotion_to_answered_s) <= BOUND_S, done


async def test_a_lane_blocked_on_a_demoted_master_rides_out_a_manual_failover(
    fleet: Fleet, cluster: ReplicatedCluster
) -> None:
    _, (lane,) = await start_supervised(fleet, 1)
    pid = (await lane.state())["pid"]
    master = cluster.owner_of(fleet.keys.commands(lane.instance_id))
    replica = cluster.replica_of(master)
    await asyncio.sleep(0.5)  # idle: blocked on XREADGROUP at ``master``
    cluster.manual_failover(replica)
    await asyncio.to_thread(cluster.wait_master, replica)
    done = await lane.purchase("after-manual-failover", 1000, timeout=60)
    assert "success" == done["result"]
    assert [] == lane.events.of_type("lane_crashed")
    assert pid == (await lane.state())["pid"]
