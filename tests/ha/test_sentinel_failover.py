"""Issue 19 on Sentinel: ``kill -9`` of the primary under load, three times, at three steps.

A primary, a replica and three Sentinels (``redis-server --sentinel``,
down-after 1000 ms); four lanes on the simulator under one supervisor with
``MULTIPAIR_REDIS_MIN_REPLICAS=1``; a POS driver pushing purchases through
raw Redis (tests/ha/pos.py). The primary is killed while records are being
written, while every terminal holds a request, and while outcomes are being
written; each time the old primary comes back as a replica of the new one
(as an operator would), so the next failover has a replica to promote.

Checked (tests/ha/pos.py ``verdict``): exactly one ``transaction_completed``
per command on the final stream, the terminal saw each ``pos_ref_id`` at most
once, every outcome is the terminal's, identical outcomes only when one was
published again; and every lane completes a new purchase within
``BOUND_S`` of the promotion. The figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from structlog.testing import capture_logs

from multipair.redis_conn import connect
from multipair.simulator import Simulator
from tests import supervisor_rig
from tests.ha.pos import UNCLOSED_TO_A_DEAD_PRIMARY, Pos, final_events, terminal_truth, verdict
from tests.ha.rig import STEPS, Round, amount_mix, arm, release, start_supervised
from tests.ha.sentinel import wait_healthy
from tests.sentinel_servers import SentinelDeployment
from tests.supervisor.helpers import Fleet

LANES = 4
BOUND_S = 10.0
"""Promotion -> every lane completed a new purchase (the issue's target)."""
ANSWER_TIMEOUT_S = 60.0

pytestmark = [pytest.mark.timeout(240), *UNCLOSED_TO_A_DEAD_PRIMARY]


deployment = supervisor_rig.sentinel_deployment
fleet = supervisor_rig.sentinel_fleet  # gc.collect() at its end, under this module's filters


async def test_kill_9_of_the_primary_at_three_steps_of_the_load_loses_and_doubles_nothing(
    fleet: Fleet, deployment: SentinelDeployment, sim: Simulator
) -> None:
    _, lanes = await start_supervised(fleet, LANES, MULTIPAIR_REDIS_MIN_REPLICAS="1")
    pids = [(await lane.state())["pid"] for lane in lanes]
    rounds: list[Round] = []
    with capture_logs() as logs:
        pos = Pos(
            fleet.redis, fleet.keys, [lane.instance_id for lane in lanes], amount=amount_mix(19)
        )
        pos.start()
        await asyncio.sleep(1.0)
        for step in STEPS:
            await arm(step, pos, sim)
            old = deployment.kill_primary()
            killed = time.monotonic()
            release(step, sim)
            await asyncio.to_thread(deployment.wait_for_failover, old)
            promoted = time.monotonic()
            await asyncio.to_thread(deployment.restart_as_replica, old)
            done = Round(step, promoted - killed)
            done.promotion_to_answered_s = await pos.wait_answered_again(promoted, ANSWER_TIMEOUT_S)
            rounds.append(done)
            await asyncio.to_thread(wait_healthy, deployment)
            await asyncio.sleep(0.5)
        await pos.stop()
        client = await connect(deployment.url)
        try:
            events = await final_events(client, fleet.keys, pos.instance_ids)
        finally:
            await client.aclose()
        truth = terminal_truth(logs)
    found = verdict(pos, events, sim, truth)
    crashed = [e for e in events if e.get("type") == "lane_crashed"]
    print(
        "\nsentinel failover figures:",
        orjson.dumps(
            {"rounds": [r.as_json() for r in rounds], **found.as_json()},
            option=orjson.OPT_INDENT_2,
        ).decode(),
    )
    found.assert_money_held(at_least=20)
    assert [] == crashed
    assert pids == [(await lane.state())["pid"] for lane in lanes]  # ridden out, no restart
    for done in rounds:
        assert max(done.promotion_to_answered_s) <= BOUND_S, done
