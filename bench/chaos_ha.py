"""``make chaos`` (second part): Sentinel failovers under a purchase load, seeded.

A Sentinel deployment on loopback (a primary, a replica, three Sentinels,
``down-after-milliseconds 1000``; tests/sentinel_servers.py), the simulator
with L paired terminals (in this process), L lanes under one ``multipair
supervise`` with ``MULTIPAIR_REDIS_MIN_REPLICAS=1``, and the raw-Redis POS
driver of tests/ha/pos.py (one customer at a time per lane; declines and
slow cards mixed in). Then ``--kills`` times, after a seeded pause, at a
seeded step of the load (tests/ha/rig.py: ``records`` being written, a
request held ``at_terminal``, ``outcomes`` being written), the primary is
killed with ``kill -9``; once the Sentinels promote the replica, the old
primary is started again as a replica of the new one (as an operator would).

Each kill is timed: kill -> promotion (a majority of Sentinels names the new
primary and it answers as master), and promotion -> each lane completed a
purchase first sent after the promotion. At the end every purchase is
checked against the terminal's truth (tests/ha/pos.py ``verdict``): lost,
completed twice, conflicting outcomes, double-sent, mismatched. Prints a
table and writes ``bench/results/chaos_ha.json``. Replay with the seed::

    .venv/bin/python bench/chaos_ha.py --seed 1234 [--lanes 4] [--kills 6]

Exit status 0 when every money check held and every lane answered within
``--bound`` seconds (default 10) of every promotion, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import secrets
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import structlog
from _common import machine_facts, now_iso, percentile, say, table, write_result
from _common import run as run_main
from structlog.testing import capture_logs
from tests.ha.pos import Pos, final_events, terminal_truth, verdict
from tests.ha.rig import STEPS, Round, amount_mix, arm, release, start_supervised
from tests.ha.sentinel import wait_healthy
from tests.sentinel_servers import SentinelDeployment
from tests.simulator.helpers import paired_simulator
from tests.supervisor.helpers import Fleet

from multipair.redis_conn import connect

NAME = "chaos_ha"


async def _run(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    deployment = SentinelDeployment(
        password=secrets.token_hex(8), sentinel_password=secrets.token_hex(8)
    )
    await asyncio.to_thread(deployment.start)
    try:
        async with paired_simulator(work / "sim", args.lanes) as sim:
            client = await connect(deployment.url)
            fleet = Fleet(client, deployment.url, f"ha{uuid.uuid4().hex[:8]}", work, sim)
            try:
                _, lanes = await start_supervised(
                    fleet, args.lanes, MULTIPAIR_REDIS_MIN_REPLICAS="1"
                )
                rounds: list[Round] = []
                with capture_logs() as logs:
                    pos = Pos(
                        client,
                        fleet.keys,
                        [lane.instance_id for lane in lanes],
                        amount=amount_mix(seed),
                        tag=f"ha{seed}",
                    )
                    pos.start()
                    for k in range(args.kills):
                        await asyncio.sleep(rng.uniform(2.0, 6.0))
                        step = rng.choice(STEPS)
                        await arm(step, pos, sim)
                        old = deployment.kill_primary()
                        killed = time.monotonic()
                        release(step, sim)
                        await asyncio.to_thread(deployment.wait_for_failover, old)
                        promoted = time.monotonic()
                        await asyncio.to_thread(deployment.restart_as_replica, old)
                        done = Round(step, promoted - killed)
                        done.promotion_to_answered_s = await pos.wait_answered_again(promoted, 90)
                        rounds.append(done)
                        say(
                            f"  kill {k + 1}: {step}, promoted after "
                            f"{done.kill_to_promotion_s:.2f} s, every lane answering "
                            f"{max(done.promotion_to_answered_s):.2f} s later"
                        )
                        await asyncio.to_thread(wait_healthy, deployment)
                    await asyncio.sleep(2.0)
                    await pos.stop(90)
                    events = await final_events(client, fleet.keys, pos.instance_ids)
                    truth = terminal_truth(logs)
                found = verdict(pos, events, sim, truth)
                crashed = [e.get("cause") for e in events if e.get("type") == "lane_crashed"]
            finally:
                await fleet.close()
                await client.aclose()
    finally:
        await asyncio.to_thread(deployment.stop)
    answered = sorted(t for r in rounds for t in r.promotion_to_answered_s)
    promotions = sorted(r.kill_to_promotion_s for r in rounds)
    return {
        "rounds": rounds,
        "verdict": found,
        "lane_exits": crashed,
        "answered": answered,
        "promotions": promotions,
        "redis_errors_seen_by_pos": pos.redis_errors,
    }


async def main(args: argparse.Namespace) -> int:
    # The in-process simulator logs every frame; only its captured lines are read.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    say(f"chaos_ha: seed {seed}, {args.lanes} lanes, {args.kills} kill -9 of the primary")
    with tempfile.TemporaryDirectory(prefix="multipair-chaos-ha-") as tmp:
        out = await _run(args, seed, Path(tmp))
    found = out["verdict"]
    answered, promotions = out["answered"], out["promotions"]
    within = bool(answered) and answered[-1] <= args.bound
    ok = found.held and within and not out["lane_exits"]
    figures = {
        "kill_to_promotion_s": {
            "p50": round(percentile(promotions, 50), 3),
            "max": round(promotions[-1], 3),
        },
        "promotion_to_lane_answered_s": {
            "p50": round(percentile(answered, 50), 3),
            "max": round(answered[-1], 3),
            "n": len(answered),
        },
    }
    say()
    say(
        table(
            ["figure", "value"],
            [
                ["seed", seed],
                ["purchases", found.purchases],
                ["results", found.results],
                ["kills", [r.step for r in out["rounds"]]],
                ["lost", len(found.lost)],
                ["completed twice", len(found.completed_twice)],
                ["conflicting outcomes", len(found.live_conflicts)],
                ["identical outcomes published again", found.live_duplicates],
                ["double-sent", len(found.double_sent)],
                ["mismatched", len(found.mismatched)],
                ["refused then re-sent", found.rejections],
                ["lane exits", len(out["lane_exits"])],
                ["kill -> promotion p50 / max (s)", list(figures["kill_to_promotion_s"].values())],
                [
                    "promotion -> lane answered p50 / max (s)",
                    [figures["promotion_to_lane_answered_s"][k] for k in ("p50", "max")],
                ],
                ["verdict", "held" if ok else "FAILED"],
            ],
        )
    )
    path = write_result(
        NAME,
        {
            "when": now_iso(),
            "machine": machine_facts(),
            "params": {
                "seed": seed,
                "lanes": args.lanes,
                "kills": args.kills,
                "bound_s": args.bound,
                "down_after_ms": 1000,
                "min_replicas": 1,
            },
            **found.as_json(),
            "lane_exits": out["lane_exits"],
            "redis_errors_seen_by_pos": out["redis_errors_seen_by_pos"],
            "rounds": [r.as_json() for r in out["rounds"]],
            **figures,
            "verdict": "held" if ok else "failed",
        },
    )
    say(f"wrote {path}")
    return 0 if ok else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--bound", type=float, default=10.0, help="seconds, promotion -> answered")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        sys.exit(run_main(main(parse_args(sys.argv[1:]))))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.exit(2)
