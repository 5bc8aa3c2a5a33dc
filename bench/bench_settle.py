"""End-of-day fleet settlement: wall time of ``settle_fleet`` and time per lane.

One simulator (``multipair simulate``, its own process) with N terminals
seeded as paired, N lanes under ``multipair supervise``. For each
concurrency C (default 20): one approved purchase on every lane (50 at a
time), then the fleet settlement of a business day of its own, run in this
process as the RQ job runs it (:class:`multipair.jobs.fleet.FleetSettlement`
with the client library), then the same day again (every lane already
settled: the cost of an idempotent re-run). Recorded: wall time, per-lane time
from taking the lane's lock to its entry recorded (p50/p95/max), lanes
settled, totals against our records. Then (unless ``--no-rq``) one more
settlement through a real ``rq worker --burst`` (job enqueued to result read,
the worker's start included).

Run from the repository root::

    .venv/bin/python bench/bench_settle.py [--lanes 100] [--concurrency 20,50] [--no-rq] [--keep]
    .venv/bin/python bench/bench_settle.py --lanes 500
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    Rig,
    cpu_seconds,
    loadavg,
    machine_facts,
    now_iso,
    purchase_via_redis,
    raise_nofile,
    say,
    summary_ms,
    table,
    write_result,
)
from _common import run as run_main

from multipair.client import AsyncClient
from multipair.config import Settings
from multipair.jobs.fleet import FleetOptions, FleetSettlement
from multipair.jobs.settlement import business_day
from multipair.logs import configure_logging

NAME = "settle"
AMOUNT_CENTS = 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=100, help="lanes (and terminals)")
    parser.add_argument("--concurrency", default="20", help="comma-separated lanes at once")
    parser.add_argument(
        "--rq",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run once through a real rq worker (default: yes)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    return args


async def purchases(rig: Rig, ref: str) -> int:
    """One approved purchase on every lane, 50 at a time; how many were approved."""
    gate = asyncio.Semaphore(50)

    async def one(n: int, iid: str) -> bool:
        async with gate:
            event = await purchase_via_redis(rig.redis, rig.keys, iid, f"{ref}-{n}", AMOUNT_CENTS)
            return event.get("result") == "success"

    return sum(await asyncio.gather(*(one(n, iid) for n, iid in enumerate(rig.instance_ids))))


def _figures(result: dict[str, Any], wall_s: float) -> dict[str, Any]:
    per_lane = [int(lane["elapsed_s"] * 1e9) for lane in result["lanes"]]
    totals = result["totals"]
    return {
        "wall_s": round(wall_s, 3),
        "lanes": totals["lanes"],
        "settled": totals["settled"],
        "failed": totals["failed"],
        "unknown": totals["unknown"],
        "mismatched": totals["mismatched"],
        "terminal_count": totals["terminal"]["count"],
        "terminal_value_cents": totals["terminal"]["value_cents"],
        "our_count": totals["ours"]["count"],
        "per_lane_ms": summary_ms(per_lane),
        "wall_ms_per_lane": round(wall_s * 1000 / max(totals["lanes"], 1), 3),
    }


async def settle_once(
    rig: Rig, client: AsyncClient, day: str, concurrency: int
) -> tuple[dict[str, Any], float]:
    run = FleetSettlement(client, day, options=FleetOptions(concurrency=concurrency))
    t = time.perf_counter()
    result = await run.run()
    return result, time.perf_counter() - t


async def settle_via_rq(rig: Rig, day: str, concurrency: int) -> dict[str, Any]:
    """Enqueue ``settle_fleet`` and run one ``rq worker --burst``: enqueue to result."""
    import redis
    from rq import Queue
    from rq.job import Job, JobStatus

    from multipair.jobs import settle_fleet

    connection = redis.Redis.from_url(rig.redis_server.url)
    queue = Queue("bench-settle", connection=connection)
    t = time.perf_counter()
    job = queue.enqueue(
        settle_fleet, kwargs={"business_day": day, "concurrency": concurrency}, job_timeout=3600
    )
    env = rig._env()
    env.pop("MULTIPAIR_MASTER_KEY", None)
    log = (rig.work / "rq-worker.log").open("ab")
    worker = subprocess.Popen(  # noqa: S603, ASYNC220
        [
            str(Path(sys.executable).parent / "rq"),
            "worker",
            "--burst",
            "--url",
            rig.redis_server.url,
            "bench-settle",
        ],
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        while True:
            status = Job.fetch(job.id, connection=connection).get_status(refresh=True)
            if status in (JobStatus.FINISHED, JobStatus.FAILED):
                break
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - t
        if status != JobStatus.FINISHED:
            return {"error": f"the RQ job ended {status}: see {rig.work / 'rq-worker.log'}"}
        result = Job.fetch(job.id, connection=connection).return_value()
        figures = _figures(result, result["wall_s"])
        figures["enqueue_to_result_s"] = round(wall, 3)
        return figures
    finally:
        worker.kill()  # a burst worker's exit can hang up to 60 s in redis-py's pub/sub read
        worker.wait()
        log.close()
        connection.close()


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    configure_logging("json", level=logging.WARNING)
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "lanes": args.lanes,
            "concurrency": args.levels,
            "rq": args.rq,
            "purchases_per_lane_before_each_settlement": 1,
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
        },
        "loadavg_before": loadavg(),
        "runs": [],
    }
    today = _dt.datetime.now(_dt.UTC).date()
    async with Rig(args.lanes, keep=args.keep) as rig:
        rig.start_supervisor()
        _, stopped = await rig.wait_connected(limit_s=120 + args.lanes * 0.2)
        if stopped is not None:
            say(f"lanes did not all connect: {stopped}")
            return 1
        # As the RQ job connects: its own pool, a 30 s socket timeout (AsyncClient.connect).
        client = await AsyncClient.connect(
            Settings(redis_url=rig.redis_server.url, prefix=rig.prefix)
        )
        for n, concurrency in enumerate(args.levels):
            day = business_day(today + _dt.timedelta(days=n), _dt.datetime.now(_dt.UTC))
            approved = await purchases(rig, f"c{concurrency}-{n}")
            say(
                f"{args.lanes} lanes, {approved} purchases; settling {day}, {concurrency} at a time"
            )
            redis_cpu = cpu_seconds(rig.pids()["redis"] or 0)
            result, wall = await settle_once(rig, client, day, concurrency)
            first = _figures(result, wall)
            first["redis_cpu_s"] = round(cpu_seconds(rig.pids()["redis"] or 0) - redis_cpu, 3)
            again, wall_again = await settle_once(rig, client, day, concurrency)
            rerun = _figures(again, wall_again)
            payload["runs"].append(
                {
                    "concurrency": concurrency,
                    "business_day": day,
                    "purchases_approved": approved,
                    "settle": first,
                    "rerun_all_settled": rerun,
                }
            )
        if args.rq:
            n = len(args.levels)
            day = business_day(today + _dt.timedelta(days=n), _dt.datetime.now(_dt.UTC))
            await purchases(rig, f"rq-{n}")
            say(f"through rq worker: settling {day}, {args.levels[0]} at a time")
            payload["rq"] = await settle_via_rq(rig, day, args.levels[0])
        await client.aclose()
    payload["finished_at"] = now_iso()
    path = write_result(NAME, payload)
    rows = []
    for r in payload["runs"]:
        for label, key in (("settle", "settle"), ("re-run (all settled)", "rerun_all_settled")):
            f = r[key]
            rows.append(
                [
                    f"C={r['concurrency']} {label}",
                    f"{f['settled']}/{f['lanes']}",
                    f["mismatched"],
                    f["wall_s"],
                    f["wall_ms_per_lane"],
                    f["per_lane_ms"].get("p50"),
                    f["per_lane_ms"].get("p95"),
                    f["per_lane_ms"].get("max"),
                ]
            )
    if "rq" in payload and "error" not in payload["rq"]:
        f = payload["rq"]
        rows.append(
            [
                f"C={args.levels[0]} via rq worker",
                f"{f['settled']}/{f['lanes']}",
                f["mismatched"],
                f["enqueue_to_result_s"],
                f["wall_ms_per_lane"],
                f["per_lane_ms"].get("p50"),
                f["per_lane_ms"].get("p95"),
                f["per_lane_ms"].get("max"),
            ]
        )
    print(f"Fleet settlement of {args.lanes} lanes (wall s; per lane ms)")
    print(
        table(["run", "settled", "mismatch", "wall s", "wall/lane ms", "p50", "p95", "max"], rows)
    )
    if "rq" in payload and "error" in payload["rq"]:
        print(f"rq run failed: {payload['rq']['error']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
