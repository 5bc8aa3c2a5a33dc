"""The console and the metrics under deploy/redis/users.acl (issue 15): no role needs more.

The console runs as ``multipair-ops`` (its URL names that user) and reads
every lane, a lane's events and records, the hosts, and acts (restart, stop,
start, drain, accept); the supervisor runs as ``multipair-service`` with its
metrics on, reading every state hash for the lanes' counters. Redis' ``ACL
LOG`` stays empty: the ACL file and the code agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from multipair.simulator import Simulator
from tests.console.helpers import TOKEN, ConsoleProcess
from tests.deploy.redis_acl import AclRedis, acl_redis
from tests.poll import poll_until
from tests.simulator.helpers import paired_simulator
from tests.supervisor.helpers import Fleet, SupervisorProcess

PREFIX = "mp"
"""The prefix the ACL file is written for."""
HOST = "acl-console-host"
APPROVE = 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AclRedis]:
    with acl_redis(tmp_path / "redis") as running:
        yield running


@pytest.fixture
async def fleet(server: AclRedis, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Lanes set up by ``redis-admin``; the supervisor runs as ``multipair-service``."""
    admin = aioredis.Redis.from_url(server.url("admin"))
    async with paired_simulator(tmp_path / "sim", 1) as sim:
        assert isinstance(sim, Simulator)
        fleet = Fleet(admin, server.url("service"), PREFIX, tmp_path, sim)
        try:
            yield fleet
        finally:
            await fleet.close()
            await admin.aclose()


async def test_the_console_works_as_ops_and_the_metrics_as_service(
    server: AclRedis, fleet: Fleet, tmp_path: Path
) -> None:
    lane = await fleet.add_lane(0)
    server.reset_denials()
    supervisor = SupervisorProcess(
        fleet.env(MULTIPAIR_METRICS_PORT="0"), HOST, tmp_path / "supervisor.log"
    )
    fleet.supervisors.append(supervisor)
    await supervisor.start()
    pid = await lane.running()
    await lane.purchase("acl-1", APPROVE)

    env = fleet.env(MULTIPAIR_CONSOLE_TOKEN=TOKEN, MULTIPAIR_REDIS_URL=server.url("ops"))
    del env["MULTIPAIR_MASTER_KEY"]  # ops hold no master key
    console = ConsoleProcess(env, tmp_path / "console.log")
    await console.start()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=bearer) as http:
            iid = lane.instance_id
            async with http.get(f"{console.url}/api/lanes") as response:
                assert 200 == response.status
                assert [iid] == [r["instance_id"] for r in (await response.json())["lanes"]]
            async with http.get(f"{console.url}/api/lanes/{iid}") as response:
                details = await response.json()
            assert 200 == response.status, details
            assert ["acl-1"] == [t["pos_ref_id"] for t in details["transactions"]]
            assert "transaction_completed" in {e["type"] for e in details["events"]}
            assert "secrets" not in details["profile"]
            async with http.get(f"{console.url}/api/hosts") as response:
                assert [HOST] == [h["host_id"] for h in (await response.json())["hosts"]]

            mark = await lane.mark()
            async with http.post(f"{console.url}/api/lanes/{iid}/restart") as response:
                assert 200 == response.status, await response.text()
            await lane.running(after=mark, previous=pid)
            mark = await lane.mark()
            async with http.post(f"{console.url}/api/lanes/{iid}/stop") as response:
                assert 200 == response.status, await response.text()
            await lane.next_event("lane_stopped", after=mark, reason="disabled")
            async with http.post(f"{console.url}/api/lanes/{iid}/start") as response:
                assert 200 == response.status, await response.text()
            await lane.running(after=mark)
            for action in ("drain", "accept"):
                async with http.post(f"{console.url}/api/hosts/{HOST}/{action}") as response:
                    assert 200 == response.status, await response.text()

            entry = await poll_until(lambda: fleet.host_entry(HOST), "the host's heartbeat")
            async with http.get(f"http://127.0.0.1:{entry['metrics_port']}/metrics") as response:
                metrics = await response.text()
            counted = [
                sample.value
                for family in text_string_to_metric_families(metrics)
                for sample in family.samples
                if sample.name == "multipair_transactions_total"
                and sample.labels == {"host": HOST, "type": "purchase", "result": "success"}
            ]
            assert [1.0] == counted, metrics
    finally:
        await console.stop()
    assert [] == server.denials(), "the console (ops) and the metrics (service): no denial"
