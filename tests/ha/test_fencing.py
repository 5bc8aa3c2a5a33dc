"""Issue 19, fencing: a failover during a lease hand-over never leaves two processes on a lane.

Two supervisors (``host-a``, ``host-b``) on a Sentinel deployment share
four lanes under the raw-Redis POS load, ``MULTIPAIR_REDIS_MIN_REPLICAS=1``.
``multipair host drain host-a`` hands host-a's lanes to host-b (each drains,
its lease is released, host-b takes it), and the primary is killed
(``kill -9``) as soon as the first lane has left host-a: the rest of the
hand-over runs across the failover. The simulator counts, per terminal, the
connections that arrived while another was open (``replaced_connections``)
and the most websockets open at once (``max_open_sockets``): two lane
processes connected to one terminal at once, even for a moment, shows there.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from structlog.testing import capture_logs

from multipair.redis_conn import connect
from multipair.simulator import Simulator
from tests import supervisor_rig
from tests.failover.helpers import wait_hosts_live, wait_spread
from tests.failover.test_balance_and_drain import cli
from tests.ha.pos import UNCLOSED_TO_A_DEAD_PRIMARY, Pos, final_events, terminal_truth, verdict
from tests.ha.rig import amount_mix
from tests.ha.sentinel import wait_healthy
from tests.poll import poll_until
from tests.sentinel_servers import SentinelDeployment
from tests.supervisor.helpers import Fleet, SupervisorProcess

LANES = 4
DURABLE = {"MULTIPAIR_REDIS_MIN_REPLICAS": "1"}

pytestmark = [pytest.mark.timeout(240), *UNCLOSED_TO_A_DEAD_PRIMARY]


deployment = supervisor_rig.sentinel_deployment
fleet = supervisor_rig.sentinel_fleet  # gc.collect() at its end, under this module's filters


def _supervisor(fleet: Fleet, host_id: str) -> SupervisorProcess:
    sup = SupervisorProcess(
        fleet.env(**DURABLE), host_id, fleet.tmp_path / f"supervisor-{host_id}.log", capacity=10
    )
    fleet.supervisors.append(sup)
    return sup


async def test_a_failover_in_the_middle_of_a_drain_never_connects_two_lanes_to_a_terminal(
    fleet: Fleet, deployment: SentinelDeployment, sim: Simulator
) -> None:
    a, b = _supervisor(fleet, "host-a"), _supervisor(fleet, "host-b")
    await a.start()
    await b.start()
    await wait_hosts_live(fleet, a, b)
    lanes = [await fleet.add_lane(i) for i in range(LANES)]
    await wait_spread(lanes, {"host-a": 2, "host-b": 2}, timeout=90)
    on_a = [lane for lane in lanes if (await lane.lease()).host_id == "host-a"]  # type: ignore[union-attr]
    with capture_logs() as logs:
        pos = Pos(
            fleet.redis, fleet.keys, [lane.instance_id for lane in lanes], amount=amount_mix(3)
        )
        pos.start()
        await asyncio.sleep(1.0)
        drain = asyncio.create_task(
            cli(fleet, "host", "drain", "host-a", "--wait", "--timeout", "120", "--json")
        )

        async def one_left() -> bool:
            for lane in on_a:
                lease = await lane.lease()
                if lease is None or lease.host_id != "host-a":
                    return True
            return False

        await poll_until(one_left, "a lane left host-a", 60, interval=0.01)
        old = deployment.kill_primary()
        await asyncio.to_thread(deployment.wait_for_failover, old)
        await asyncio.to_thread(deployment.restart_as_replica, old)
        code, out, err = await drain
        await wait_spread(lanes, {"host-b": LANES}, timeout=90)
        await asyncio.to_thread(wait_healthy, deployment)
        await asyncio.sleep(2.0)  # the load goes on under the new owner
        await pos.stop()
        client = await connect(deployment.url)
        try:
            events = await final_events(client, fleet.keys, pos.instance_ids)
        finally:
            await client.aclose()
        truth = terminal_truth(logs)
    found = verdict(pos, events, sim, truth)
    overlap = {
        t.serial: (t.stats.replaced_connections, t.stats.max_open_sockets) for t in sim.terminals
    }
    print(
        "\nfencing figures:",
        orjson.dumps(
            {"drain": [code, out, err], "overlap": overlap, **found.as_json()},
            option=orjson.OPT_INDENT_2,
        ).decode(),
    )
    assert {t.serial: (0, 1) for t in sim.terminals} == overlap
    found.assert_money_held(at_least=10)
    # The drain rode the failover out: it waited for Redis and finished.
    assert 0 == code, err
    assert 0 == orjson.loads(out)["lanes"]
