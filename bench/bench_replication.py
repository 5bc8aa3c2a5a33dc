"""What durable writes cost: command overhead with 0 replicas, and with 1 replica waited for.

Issue 19, docs/deploy-ha.md "Durable writes". Two phases, each on a fresh
rig (``bench/_common.py``: redis-server, ``multipair simulate`` in its own
process, ``multipair supervise`` running the lanes), the same way as
``bench/bench_overhead.py`` measures a purchase:

- **0 replicas**: a single redis-server, ``MULTIPAIR_REDIS_MIN_REPLICAS=0``
  (the default: no ``WAIT`` is sent);
- **1 replica**: the same plus a replica (``--replicaof``, same machine) and
  ``MULTIPAIR_REDIS_MIN_REPLICAS=1``: the record is confirmed before the
  request is sent, the ``sent`` move and the outcome once applied.

For each concurrency C (default 1 and 10) C lanes each run their purchases
one after another: ``XADD`` on the lane's command stream, time until its
``transaction_completed`` is read (a reader per lane, ``XREAD BLOCK``). The
first ``--warmup`` purchases of each lane are not counted. The number of
``WAIT`` calls per purchase is read from ``INFO commandstats``. Run from
the repository root::

    .venv/bin/python bench/bench_replication.py [--quick] [--concurrency 1,10] [--purchases 300,100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass
from typing import Any

from _common import Rig, machine_facts, now_iso, raise_nofile, say, summary_ms, table, write_result
from _common import run as run_main
from bench_overhead import LaneDriver
from tests.redis_server import RedisServer

from multipair.logs import configure_logging

NAME = "replication"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer purchases (a smoke run)")
    parser.add_argument("--concurrency", default="1,10", help="lanes at once, comma-separated")
    parser.add_argument("--purchases", default="", help="purchases per lane for each level")
    parser.add_argument("--warmup", type=int, default=10, help="first purchases not counted")
    parser.add_argument("--wait-ms", type=int, default=500, help="MULTIPAIR_REDIS_WAIT_MS")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.concurrency.split(",")]
    default = "40,20" if args.quick else "300,100"
    counts = [int(x) for x in (args.purchases or default).split(",")]
    args.counts = (counts * len(args.levels))[: len(args.levels)]
    if args.quick:
        args.warmup = min(args.warmup, 5)
    return args


@dataclass
class ReplicatedRig(Rig):
    """A :class:`Rig` whose services wait for ``min_replicas`` replicas (and has one, if asked)."""

    min_replicas: int = 0
    wait_ms: int = 500
    replica: RedisServer | None = None

    async def _start(self) -> None:
        await super()._start()
        if self.min_replicas:
            port = self.redis_server.port
            self.replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(port)))
            self.replica.start()
            while True:
                info: Any = await self.redis.info("replication")
                if "slave0" in info and info["slave0"].get("state") == "online":
                    break
                await asyncio.sleep(0.05)

    def _env(self, **extra: str) -> dict[str, str]:
        return super()._env(
            MULTIPAIR_REDIS_MIN_REPLICAS=str(self.min_replicas),
            MULTIPAIR_REDIS_WAIT_MS=str(self.wait_ms),
            **extra,
        )

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.replica is not None:
                self.replica.stop()


async def _waits(rig: Rig) -> int:
    stats: Any = await rig.redis.info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_wait", "cmdstat_waitaof"))


async def phase(replicas: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    top = max(args.levels)
    results: list[dict[str, Any]] = []
    async with ReplicatedRig(
        terminals=top, lanes=top, min_replicas=replicas, wait_ms=args.wait_ms
    ) as rig:
        rig.start_supervisor(capacity=top)
        _, stopped = await rig.wait_connected(120, max_kills=5)
        if stopped is not None:
            raise RuntimeError(f"lanes did not all connect: {stopped}")
        await asyncio.sleep(1)
        drivers = [LaneDriver(rig.redis_server.url, rig, iid) for iid in rig.instance_ids[:top]]
        for driver in drivers:
            await driver.start()
        try:
            for level, count in zip(args.levels, args.counts, strict=True):
                say(f"{replicas} replica(s): {level} lane(s) x {count} purchases")
                waits_before = await _waits(rig)
                runs = await asyncio.gather(
                    *(
                        drivers[i].run(f"r{replicas}-{level}-{i}", count, args.warmup)
                        for i in range(level)
                    )
                )
                waits = await _waits(rig) - waits_before
                results.append(
                    {
                        "replicas": replicas,
                        "min_replicas": replicas,
                        "concurrency": level,
                        "purchases": level * count,
                        "failed": sum(r["failed"] for r in runs),
                        "total_ms": summary_ms(s for r in runs for s in r["completed"]),
                        "xadd_to_accepted_ms": summary_ms(s for r in runs for s in r["accepted"]),
                        "waits_per_purchase": round(waits / (level * count), 2),
                    }
                )
        finally:
            for driver in drivers:
                await driver.close()
    return results


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("console", level=logging.WARNING)
    raise_nofile()
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "concurrency": args.levels,
            "purchases_per_lane": args.counts,
            "warmup_per_lane": args.warmup,
            "wait_ms": args.wait_ms,
            "replica": "redis-server --replicaof, same machine (loopback)",
            "redis_persistence": "off (no AOF, no RDB): WAIT, not WAITAOF",
        },
        "phases": [*await phase(0, args), *await phase(1, args)],
    }
    payload["finished_at"] = now_iso()
    rows = []
    for level in args.levels:
        by = {p["replicas"]: p for p in payload["phases"] if p["concurrency"] == level}
        for replicas in (0, 1):
            p = by[replicas]
            t = p["total_ms"]
            rows.append(
                [
                    f"{replicas} replica(s)",
                    level,
                    t["count"],
                    t["p50"],
                    t["p95"],
                    t["p99"],
                    p["waits_per_purchase"],
                    p["failed"],
                ]
            )
        rows.append(
            [
                "added by WAIT",
                level,
                "",
                *(
                    round(by[1]["total_ms"][q] - by[0]["total_ms"][q], 3)
                    for q in ("p50", "p95", "p99")
                ),
                "",
                "",
            ]
        )
    path = write_result(NAME, payload)
    print("Purchase: XADD -> transaction_completed, ms (MIN_REPLICAS 0 vs 1 with one replica)")
    print(table(["phase", "C", "n", "p50", "p95", "p99", "WAIT/tx", "failed"], rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
