"""Command overhead: a purchase through Redis and a lane process, beside the direct SPI client.

One simulator (``multipair simulate``, its own process, zero card delay) with
2 x max(concurrency) terminals seeded as paired: the first half served by
lanes under ``multipair supervise``, the second half by ``DirectPos``
clients in this process. For each concurrency C (default 1 and 50):

- **direct**: C ``DirectPos`` clients (the SPI core over one websocket each,
  no Redis, no lane process), each running its purchases one after another;
  the time is ``transact()`` from call to return.
- **lanes**: C lanes, each sent its purchases one after another with ``XADD``
  on its command stream; a reader task per lane (its own connection, ``XREAD
  BLOCK``) stamps ``time.perf_counter_ns()`` when the ``command_accepted`` and
  the ``transaction_completed`` events arrive; the time is from the return of
  ``XADD`` to reading ``transaction_completed``.

The direct runs come first, before the supervisor starts, so they share the
machine with nothing of ours. The first ``--warmup`` purchases of each client
are not counted. Also recorded: throughput, and CPU seconds per purchase of
each process group (lanes, supervisor, Redis, simulator, this process).
Run from the repository root::

    .venv/bin/python bench/bench_overhead.py [--quick] [--concurrency 1,50] [--purchases 500,200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from _common import (
    KEYS,
    Rig,
    children_of,
    cpu_meter,
    last_event_id,
    loadavg,
    machine_facts,
    now_iso,
    raise_nofile,
    say,
    summary_ms,
    table,
    write_result,
)
from _common import run as run_main

from multipair.direct import DirectPos
from multipair.logs import configure_logging
from multipair.spi import messages as m

NAME = "overhead"
AMOUNT_CENTS = 1000  # .00: approved at once by the simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,50", help="comma-separated C")
    parser.add_argument(
        "--purchases", default="500,100", help="purchases per client, one per C (or one for all)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="uncounted purchases per client")
    parser.add_argument("--quick", action="store_true", help="C = 1, 10; 100 and 40 purchases")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.purchases, args.warmup = "1,10", "100,40", 5
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    counts = [int(x) for x in args.purchases.split(",") if x.strip()]
    if len(counts) == 1:
        counts *= len(args.levels)
    if len(counts) != len(args.levels):
        parser.error("--purchases needs one count, or one per concurrency level")
    args.counts = counts
    return args


# ---------------------------------------------------------------------------
# Direct


async def direct_client(url: str, ref: str, total: int, warmup: int) -> tuple[list[int], int]:
    """One DirectPos running ``total`` purchases; (durations of the counted ones, failures)."""
    samples: list[int] = []
    failed = 0
    async with DirectPos(f"{url}?posId=POS1", pos_id="POS1", secrets=KEYS) as pos:
        await pos.wait_ready(timeout=30)
        for i in range(total):
            request = m.PurchaseRequest(pos_ref_id=f"{ref}-{i}", purchase_amount=AMOUNT_CENTS)
            t0 = time.perf_counter_ns()
            done = await pos.transact(request, timeout=30)
            t1 = time.perf_counter_ns()
            if str(done.outcome) != "success":
                failed += 1
            if i >= warmup:
                samples.append(t1 - t0)
    return samples, failed


# ---------------------------------------------------------------------------
# Lanes


@dataclass
class Pending:
    sent_ns: int
    accepted_ns: int | None = None
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


BodyFor = Callable[[str], dict[str, Any]]
"""A command body for a command_id (used as the pos_ref_id too)."""


def purchase_body(command_id: str) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "type": "purchase",
        "pos_ref_id": command_id,
        "amount_cents": AMOUNT_CENTS,
    }


@dataclass
class Sampled:
    """One command through a lane: its final event and when (perf_counter_ns) it was
    XADDed (call and return) and its ``command_accepted`` read."""

    event: dict[str, Any]
    t0_ns: int
    sent_ns: int
    accepted_ns: int | None

    @property
    def completed_ns(self) -> int:
        """From the return of XADD to reading the final event."""
        return int(self.event["_read_ns"]) - self.sent_ns


class LaneDriver:
    """A POS backend for one lane: XADD purchases; a reader task stamps the events."""

    def __init__(self, url: str, rig: Rig, iid: str) -> None:
        self.rig, self.iid = rig, iid
        # Its own connection (XREAD BLOCK holds it), named so MONITOR can tell it apart.
        self.reader = aioredis.Redis.from_url(url, client_name="bench-reader")
        self.stream = rig.keys.events(iid)
        self.waiting: dict[str, Pending] = {}
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        last = await last_event_id(self.reader, self.stream)
        self.task = asyncio.create_task(self._read(last))

    async def _read(self, last: str) -> None:
        while not self.stopping:
            reply: Any = await self.reader.xread({self.stream: last}, count=100, block=1000)
            stamp = time.perf_counter_ns()
            for entry_id, fields in reply[0][1] if reply else []:
                last = entry_id
                event = orjson.loads(fields[b"body"])
                pending = self.waiting.get(event.get("command_id") or "")
                if pending is None:
                    continue
                if event["type"] == "command_accepted":
                    pending.accepted_ns = stamp
                elif event["type"] in ("transaction_completed", "command_rejected"):
                    event["_read_ns"] = stamp
                    if not pending.done.done():
                        pending.done.set_result(event)

    async def transact(self, body: dict[str, Any], timeout: float = 30) -> Sampled:  # noqa: ASYNC109
        """XADD one command (``body`` with its ``command_id``); wait for its final event."""
        command_id = body["command_id"]
        fields = {"v": "1", "body": orjson.dumps(body)}
        t0 = time.perf_counter_ns()
        pending = self.waiting[command_id] = Pending(sent_ns=t0)
        try:
            await self.rig.redis.xadd(self.rig.keys.commands(self.iid), fields)  # type: ignore[arg-type]
            pending.sent_ns = sent = time.perf_counter_ns()
            event = await asyncio.wait_for(pending.done, timeout)
        finally:
            del self.waiting[command_id]
        return Sampled(event, t0, sent, pending.accepted_ns)

    async def run(
        self, ref: str, total: int, warmup: int, body_for: BodyFor | None = None
    ) -> dict[str, Any]:
        """``total`` commands one after another (default: purchases of AMOUNT_CENTS)."""
        completed: list[int] = []
        accepted: list[int] = []
        xadd: list[int] = []
        failed = 0
        for i in range(total):
            command_id = f"{ref}-{i}"
            body = (body_for or purchase_body)(command_id)
            done = await self.transact(body)
            if done.event.get("result") != "success":
                failed += 1
            if i >= warmup:
                completed.append(done.completed_ns)
                xadd.append(done.sent_ns - done.t0_ns)
                if done.accepted_ns is not None:
                    accepted.append(done.accepted_ns - done.sent_ns)
        return {"completed": completed, "accepted": accepted, "xadd": xadd, "failed": failed}

    async def close(self) -> None:
        """Stop the reader between two reads (within its 1 s block): a cancelled
        blocking read can swallow the cancellation (redis-py 8) and never end."""
        if self.task is not None:
            self.stopping = True
            await asyncio.wait([self.task], timeout=5)
            if not self.task.done():
                self.task.cancel()
            await asyncio.wait([self.task], timeout=5)
        await self.reader.aclose()


# ---------------------------------------------------------------------------


def _groups(rig: Rig, template: int | None) -> dict[str, list[int]]:
    pids = rig.pids()
    groups = {
        "bench": [os.getpid()],
        "simulator": [pids["simulator"] or 0],
        "redis": [pids["redis"] or 0],
    }
    if template is not None and pids["supervisor"]:
        groups["supervisor"] = [pids["supervisor"]]
        groups["template"] = [template]
        groups["lanes"] = sorted(children_of(template))
    return groups


async def _command_calls(rig: Rig) -> dict[str, int]:
    """Redis ``INFO commandstats``: calls per command (scripts' inner calls included)."""
    stats: Any = await rig.redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def lane_commands(rig: Rig, driver: LaneDriver, purchases: int) -> dict[str, Any]:
    """What one lane sends to Redis per purchase, seen with MONITOR over ``purchases``.

    The lane's connections are those that read its command stream (XREADGROUP)
    or ran a fenced write script (EVALSHA naming 2+ keys of the lane); this
    script's own connections are named ``bench*`` and the supervisor's never
    do either. Pipelined commands count one each (a pipeline is one round trip).
    """
    iid = driver.iid
    clients: Any = await rig.redis.client_list()
    ours = {c["addr"] for c in clients if str(c.get("name", "")).startswith("bench")}
    seen: list[dict[str, Any]] = []
    monitor_client = rig.redis.client()
    async with monitor_client.monitor() as monitor:

        async def collect() -> None:
            while True:
                seen.append(dict(await monitor.next_command()))

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.2)
        await driver.run("mon", purchases, 0)
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await monitor_client.aclose()
    lane_addrs: set[str] = set()
    for c in seen:
        words = c["command"].split()
        addr = f"{c['client_address']}:{c['client_port']}"
        if c["client_type"] == "lua" or addr in ours or iid not in c["command"]:
            continue
        if words[0].upper() == "XREADGROUP" or (
            words[0].upper() == "EVALSHA"
            and len(words) > 2
            and words[2].isdigit()
            and int(words[2]) >= 2
        ):
            lane_addrs.add(addr)
    by_type: dict[str, int] = {}
    inside_scripts = 0
    for c in seen:
        addr = f"{c['client_address']}:{c['client_port']}"
        if c["client_type"] == "lua":
            inside_scripts += 1
        elif addr in lane_addrs:
            name = c["command"].split()[0].upper()
            by_type[name] = by_type.get(name, 0) + 1
    return {
        "purchases": purchases,
        "lane_connections_seen": len(lane_addrs),
        "lane_commands_per_purchase": round(sum(by_type.values()) / purchases, 2),
        "by_command": {k: round(v / purchases, 2) for k, v in sorted(by_type.items())},
        "commands_run_inside_scripts_per_purchase_all_clients": round(
            inside_scripts / purchases, 2
        ),
        "note": "includes the lane's heartbeat (one EVALSHA every 2 s) in the window",
    }


def _per_purchase(cpu: dict[str, float], purchases: int) -> dict[str, float]:
    return {
        k: round(v * 1000 / purchases, 3)
        for k, v in cpu.items()
        if k not in ("wall_s", "machine_busy_s", "others") and purchases
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("console", level=logging.WARNING)
    raise_nofile()
    top = max(args.levels)
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "concurrency": args.levels,
            "purchases_per_client": args.counts,
            "warmup_per_client": args.warmup,
            "amount_cents": AMOUNT_CENTS,
            "card_delay_s": 0,
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
            "lanes_running_during_lane_phases": top,
            "redis_persistence": "off (no AOF, no RDB)",
        },
        "loadavg_before": loadavg(),
        "phases": [],
    }
    async with Rig(terminals=2 * top, lanes=top, keep=args.keep) as rig:
        terminals = rig.manifest["terminals"]
        direct_urls = [t["ws_url"] for t in terminals[top : 2 * top]]
        for level, count in zip(args.levels, args.counts, strict=True):
            say(f"direct: {level} client(s) x {count} purchases")
            with cpu_meter(_groups(rig, None)) as cpu:
                results = await asyncio.gather(
                    *(
                        direct_client(direct_urls[i], f"d{level}-{i}", count, args.warmup)
                        for i in range(level)
                    )
                )
            samples = [s for r, _ in results for s in r]
            payload["phases"].append(
                {
                    "path": "direct",
                    "concurrency": level,
                    "purchases": level * count,
                    "failed": sum(f for _, f in results),
                    "throughput_per_s": round(level * count / cpu["wall_s"], 1),
                    "total_ms": summary_ms(samples),
                    "cpu_s": cpu,
                    "cpu_ms_per_purchase": _per_purchase(cpu, level * count),
                }
            )

        rig.start_supervisor(capacity=top)
        template = await rig.template_pid()
        _, stopped = await rig.wait_connected(120, max_kills=5)
        if stopped is not None:
            raise RuntimeError(f"lanes did not all connect: {stopped}")
        await asyncio.sleep(2)
        url = rig.redis_server.url
        drivers = [LaneDriver(url, rig, iid) for iid in rig.instance_ids[:top]]
        for driver in drivers:
            await driver.start()
        try:
            for level, count in zip(args.levels, args.counts, strict=True):
                say(f"lanes: {level} lane(s) x {count} purchases ({top} lanes running)")
                calls_before = await _command_calls(rig)
                with cpu_meter(_groups(rig, template)) as cpu:
                    runs = await asyncio.gather(
                        *(drivers[i].run(f"l{level}-{i}", count, args.warmup) for i in range(level))
                    )
                calls_after = await _command_calls(rig)
                n_tx = level * count
                calls = {
                    k: round((v - calls_before.get(k, 0)) / n_tx, 2)
                    for k, v in sorted(calls_after.items(), key=lambda kv: -kv[1])
                    if v - calls_before.get(k, 0) >= n_tx / 10
                }
                payload["phases"].append(
                    {
                        "path": "lanes",
                        "concurrency": level,
                        "purchases": level * count,
                        "failed": sum(r["failed"] for r in runs),
                        "throughput_per_s": round(level * count / cpu["wall_s"], 1),
                        "total_ms": summary_ms(s for r in runs for s in r["completed"]),
                        "xadd_to_accepted_ms": summary_ms(s for r in runs for s in r["accepted"]),
                        "xadd_call_ms": summary_ms(s for r in runs for s in r["xadd"]),
                        "cpu_s": cpu,
                        "cpu_ms_per_purchase": _per_purchase(cpu, level * count),
                        "redis_calls_per_purchase": calls,
                        "redis_calls_note": "all clients (lanes, supervisor, this script) and "
                        "the commands scripts run inside Redis (evalsha counts the script call)",
                    }
                )
            say("lanes: MONITOR of one lane over 20 purchases")
            payload["lane_redis_commands"] = await lane_commands(rig, drivers[0], 20)
        finally:
            for driver in drivers:
                await driver.close()
        payload["supervisor_log"] = rig.sup_log.summary()
    payload["finished_at"] = now_iso()

    rows = []
    summary: list[dict[str, Any]] = []
    for level in args.levels:
        direct = next(
            p for p in payload["phases"] if p["path"] == "direct" and p["concurrency"] == level
        )
        lanes = next(
            p for p in payload["phases"] if p["path"] == "lanes" and p["concurrency"] == level
        )
        ratio = {
            q: round(lanes["total_ms"][q] / direct["total_ms"][q], 2) for q in ("p50", "p95", "p99")
        }
        added = {
            q: round(lanes["total_ms"][q] - direct["total_ms"][q], 3) for q in ("p50", "p95", "p99")
        }
        summary.append({"concurrency": level, "ratio_lanes_over_direct": ratio, "added_ms": added})
        for phase in (direct, lanes):
            t = phase["total_ms"]
            rows.append(
                [
                    phase["path"],
                    level,
                    t["count"],
                    t["p50"],
                    t["p95"],
                    t["p99"],
                    phase["throughput_per_s"],
                    phase["failed"],
                ]
            )
        rows.append(
            ["ratio lanes/direct", level, "", ratio["p50"], ratio["p95"], ratio["p99"], "", ""]
        )
    payload["comparison"] = summary
    path = write_result(NAME, payload)
    print("Purchase: XADD -> transaction_completed (lanes) vs DirectPos.transact (direct), ms")
    print(table(["path", "C", "n", "p50", "p95", "p99", "tx/s", "failed"], rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
