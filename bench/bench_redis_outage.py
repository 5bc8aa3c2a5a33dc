"""Redis outage: ``kill -9`` of redis-server for 10 s under a supervisor's lanes (issue 13).

A fresh ``redis-server`` with AOF on, ``multipair simulate`` (own process)
with L terminals seeded as paired, L lane profiles, ``multipair supervise``.
Once every lane is connected and has answered one purchase, this script,
``--outages`` times:

1. notes each lane's pid and each terminal's connection count,
2. ``kill -9`` the redis-server, waits ``--outage`` seconds,
3. starts it again on the same port from the same AOF folder (it answers
   once the AOF is loaded) and stamps ``time.perf_counter_ns()``: "back",
4. sends every lane a purchase at once and stamps, on arrival, each lane's
   final event,
5. checks every lane runs under the same pid and counts lane exits and
   kills in the supervisor's log, and terminal reconnections.

Reported: lane exits (must be 0), lanes killed, terminal reconnections, and
the p50/p99/max of "back" -> purchase answered, per lane and outage. No
assertion: the figures are printed and written to
``bench/results/redis_outage.json``. Run from the repository root::

    .venv/bin/python bench/bench_redis_outage.py [--lanes 20] [--outage 10] [--outages 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
from typing import Any

import orjson
from _common import (
    FINAL_EVENTS,
    Rig,
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
from redis.exceptions import RedisError

NAME = "redis_outage"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=20)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds Redis is down")
    parser.add_argument("--outages", type=int, default=3, help="outages in a row")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between outages")
    parser.add_argument(
        "--appendfsync",
        default="everysec",
        choices=("always", "everysec"),
        help="AOF fsync policy (deploy/redis.conf: everysec)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per purchase")
    parser.add_argument("--quick", action="store_true", help="5 lanes, one 5 s outage")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.lanes, args.outage, args.outages = min(args.lanes, 5), 5.0, 1
    return args


async def _until_reachable(rig: Rig, limit_s: float = 30) -> None:
    """The bench's own client: its pooled connections died with the server."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            await rig.redis.ping()
            return
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


async def _purchase(rig: Rig, iid: str, ref: str, limit_s: float) -> dict[str, Any]:
    """XADD a purchase now; the ns (perf counter) its final event arrived, and the event."""
    stream = rig.keys.events(iid)
    last = await last_event_id(rig.redis, stream)
    command_id = f"c-{ref}"
    body = {"command_id": command_id, "type": "purchase", "pos_ref_id": ref, "amount_cents": 1000}
    await rig.redis.xadd(rig.keys.commands(iid), {"v": "1", "body": orjson.dumps(body)})
    deadline = time.monotonic() + limit_s
    while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
        reply: Any = await rig.redis.xread({stream: last}, count=100, block=left_ms)
        stamp = time.perf_counter_ns()
        for entry_id, fields in reply[0][1] if reply else []:
            last = entry_id.decode()
            event = orjson.loads(fields[b"body"])
            if event.get("command_id") == command_id and event["type"] in FINAL_EVENTS:
                return {"answered_ns": stamp, "type": event["type"], "result": event.get("result")}
    return {"error": f"no answer within {limit_s} s"}


def _connections(rig: Rig) -> dict[str, int]:
    """serial -> POS connections the terminal has taken since the simulator started."""
    url = f"{rig.manifest['control_url']}/terminals"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback simulator
        terminals = orjson.loads(response.read())["terminals"]
    return {t["serial"]: int(t["counters"]["connections_total"]) for t in terminals}


def _exits(rig: Rig) -> list[dict[str, Any]]:
    """Lane exits in the supervisor's log (its lanes log into the same file)."""
    out = []
    with (rig.work / "supervisor.log").open("rb") as f:
        for line in f:
            if b"lane exited" not in line and b"lane crashed" not in line:
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("event") in ("lane exited", "lane crashed"):
                out.append(entry)
    return out


async def one_outage(rig: Rig, args: argparse.Namespace, n: int) -> dict[str, Any]:
    before = dict(zip(rig.instance_ids, await rig.lane_states(), strict=True))
    connections = await asyncio.to_thread(_connections, rig)
    exits_before = len(_exits(rig))
    server = rig.redis_server
    server.kill()  # kill -9
    down_ns = time.perf_counter_ns()
    await asyncio.sleep(args.outage)
    await asyncio.to_thread(server.start)  # same port, same folder; answers once loaded
    back_ns = time.perf_counter_ns()
    await _until_reachable(rig)
    answers = await asyncio.gather(
        *(_purchase(rig, iid, f"o{n}-{i}", args.timeout) for i, iid in enumerate(rig.instance_ids))
    )
    after = dict(zip(rig.instance_ids, await rig.lane_states(), strict=True))
    reconnects = await asyncio.to_thread(_connections, rig)
    answered = [a for a in answers if "error" not in a]
    return {
        "outage_s": round((back_ns - down_ns) / 1e9, 3),
        "lanes": len(rig.instance_ids),
        "answered": len(answered),
        "approved": sum(1 for a in answered if a["result"] == "success"),
        "failed": [a for a in answers if "error" in a],
        "lane_exits": len(_exits(rig)) - exits_before,
        "pids_changed": sum(1 for iid in rig.instance_ids if before[iid][1] != after[iid][1]),
        "terminal_reconnects": sum(reconnects[s] - connections.get(s, 0) for s in reconnects),
        "back_to_answered_ns": [a["answered_ns"] - back_ns for a in answered],
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "lanes": args.lanes,
            "outage_s": args.outage,
            "outages": args.outages,
            "appendfsync": args.appendfsync,
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
        },
        "loadavg_before": loadavg(),
    }
    outages: list[dict[str, Any]] = []
    async with Rig(
        args.lanes, redis_aof=True, redis_args=("--appendfsync", args.appendfsync), keep=args.keep
    ) as rig:
        rig.start_supervisor(capacity=args.lanes)
        await rig.template_pid()
        _, stopped = await rig.wait_connected(120, max_kills=5)
        if stopped is not None:
            raise RuntimeError(f"lanes did not all connect: {stopped}")
        warm = await asyncio.gather(
            *(_purchase(rig, iid, f"warm-{i}", 30) for i, iid in enumerate(rig.instance_ids))
        )
        if any("error" in w for w in warm):
            raise RuntimeError(f"warm-up purchases failed: {warm}")
        for n in range(args.outages):
            say(f"outage {n + 1}/{args.outages}: redis-server down for {args.outage:g} s")
            outages.append(await one_outage(rig, args, n))
            await asyncio.sleep(args.settle)
        payload["supervisor_log"] = rig.sup_log.summary()
        crash_loop = [
            iid
            for iid in rig.instance_ids
            if await rig.redis.hget(rig.keys.state(iid), "crash_loop") == b"1"
        ]
    samples = [ns for o in outages for ns in o["back_to_answered_ns"]]
    payload["results"] = {
        "outages": len(outages),
        "purchases": sum(o["lanes"] for o in outages),
        "answered": sum(o["answered"] for o in outages),
        "approved": sum(o["approved"] for o in outages),
        "lane_exits": sum(o["lane_exits"] for o in outages),
        "pids_changed": sum(o["pids_changed"] for o in outages),
        "lanes_in_crash_loop": len(crash_loop),
        "lanes_killed": payload["supervisor_log"]["kills_by_reason"],
        "terminal_reconnects": sum(o["terminal_reconnects"] for o in outages),
        "back_to_answered_ms": summary_ms(samples),
    }
    payload["outages"] = [
        {**{k: v for k, v in o.items() if k != "back_to_answered_ns"}}
        | {"back_to_answered_ms": [round(ns / 1e6, 1) for ns in o["back_to_answered_ns"]]}
        for o in outages
    ]
    payload["finished_at"] = now_iso()
    path = write_result(NAME, payload)
    r = payload["results"]
    st = r["back_to_answered_ms"]
    print(
        f"Redis outage: kill -9 of redis-server for {args.outage:g} s, restarted from its AOF "
        f"(appendfsync {args.appendfsync}); {args.lanes} lanes, {args.outages} outages"
    )
    print(
        table(
            ["Redis back -> purchase answered (ms)", "n", "p50", "p95", "p99", "max"],
            [
                [
                    "per lane and outage",
                    st.get("count"),
                    st.get("p50"),
                    st.get("p95"),
                    st.get("p99"),
                    st.get("max"),
                ]
            ],
        )
    )
    print(
        f"lane exits {r['lane_exits']}, pids changed {r['pids_changed']}, "
        f"lanes killed {r['lanes_killed'] or 0}, in crash_loop {r['lanes_in_crash_loop']}, "
        f"terminal reconnects {r['terminal_reconnects']}; "
        f"answered {r['answered']}/{r['purchases']} (approved {r['approved']})"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
