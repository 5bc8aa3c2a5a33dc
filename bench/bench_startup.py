"""Lanes started and connected per host, and what each lane costs in memory.

For each N (default 10, 100, 500, 1000): a fresh ``redis-server``, ``multipair
simulate --terminals N`` in its own process with every terminal seeded as
paired, N lane profiles holding the same keys, then ``multipair supervise
--capacity N`` as a subprocess. Measured from the supervisor's start:

- when its lane template was ready, when the last lane was spawned (its log),
  and when the first, median, 90th percentile and last lane was seen
  ``paired_connected`` in its state hash (polled);
- CPU seconds spent by each process group until all were connected, and while
  idle afterwards (``--idle`` seconds);
- PSS / USS / RSS (``/proc/<pid>/smaps_rollup``) of the lanes (sum / N), the
  template, the supervisor, the simulator and Redis, idle and again after one
  purchase on every lane;
- how long a SIGTERM of the supervisor takes to stop everything.

An N is skipped, with the reason recorded, when free memory or file
descriptors would not allow it. Run from the repository root::

    .venv/bin/python bench/bench_startup.py [--quick] [--sizes 10,100,500,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import sys
import time
import traceback
from typing import Any

import orjson
from _common import (
    Rig,
    children_of,
    cow_breakdown,
    cpu_meter,
    cpu_seconds,
    fd_count,
    loadavg,
    machine_facts,
    mem_available_mib,
    memory_of,
    now_iso,
    percentile,
    purchase_via_redis,
    raise_nofile,
    say,
    table,
    write_result,
)
from _common import run as run_main

NAME = "startup"
# Budget per lane for the go/no-go check (measured ~14 MiB PSS per idle lane,
# simulator ~0.4 MiB per terminal, Redis a little): generous on purpose.
MIB_PER_LANE_BUDGET = 20
FIXED_MIB_BUDGET = 800
FDS_PER_LANE = 4  # simulator: listening socket + connection; Redis: the lane's connections


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,500,1000", help="comma-separated N")
    parser.add_argument("--quick", action="store_true", help="N = 10, 100; shorter idle window")
    parser.add_argument("--idle", type=float, default=5.0, help="idle CPU window, seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="wait before measuring memory")
    parser.add_argument(
        "--no-purchase", action="store_true", help="skip the purchase-per-lane memory pass"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="purchases in flight")
    parser.add_argument(
        "--timeout-per-lane", type=float, default=0.5, help="connect timeout: 60 s + this x N"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folders (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = "10,100"
        args.idle = min(args.idle, 3.0)
    args.size_list = [int(x) for x in args.sizes.split(",") if x.strip()]
    return args


def _log_times(path: Any, event: str, **match: Any) -> list[float]:
    """Unix times of the supervisor log lines with this ``event`` (and fields)."""
    times: list[float] = []
    with contextlib.suppress(OSError), open(path, "rb") as f:
        for line in f:
            if event.encode() not in line:
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("event") != event or any(entry.get(k) != v for k, v in match.items()):
                continue
            if not all(k in entry for k in match) and match:
                continue
            stamp = entry.get("timestamp")
            if isinstance(stamp, str):
                times.append(_dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return times


def precheck(n: int) -> str | None:
    """Why N cannot run here (memory, file descriptors), or None."""
    need = n * MIB_PER_LANE_BUDGET + FIXED_MIB_BUDGET
    free = mem_available_mib()
    if free < need:
        return f"needs ~{need} MiB, only {free:.0f} MiB available"
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n * FDS_PER_LANE + 200:
        return f"RLIMIT_NOFILE {soft} (hard {hard}) is below ~{n * FDS_PER_LANE + 200}"
    return None


async def one_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    result: dict[str, Any] = {
        "n": n,
        "variant": "multipair supervise",
        "loadavg_before": loadavg(),
    }
    async with Rig(n, keep=args.keep) as rig:
        result["setup"] = dict(rig.timings)
        rig.start_supervisor(capacity=n)
        wall0 = rig.sup_started_wall
        t0 = rig.sup_started_ns
        result["supervisor_command"] = " ".join(
            ["python" if i == 0 else a for i, a in enumerate(rig.sup_command)]
        )
        template = await rig.template_pid()
        template_at = (time.perf_counter_ns() - t0) / 1e9
        poll = 0.05 if n <= 100 else 0.1
        seen, stopped = await rig.wait_connected(
            60 + n * args.timeout_per_lane, poll_s=poll, max_kills=max(5, n // 20)
        )
        complete = stopped is None
        ready = sorted((stamp - t0) / 1e9 for stamp in seen.values())
        sup = rig.sup_proc
        assert sup is not None
        lanes = sorted(children_of(template))
        groups = {
            "supervisor": [sup.pid],
            "template": [template],
            "lanes": lanes,
            "simulator": [rig.pids()["simulator"] or 0],
            "redis": [rig.pids()["redis"] or 0],
        }
        result["cpu_s_until_all_connected"] = {
            name: round(sum(cpu_seconds(p) for p in pids), 2) for name, pids in groups.items()
        }
        spawns = _log_times(rig.work / "supervisor.log", "lane started", restarts=0)
        result["startup"] = {
            "complete": complete,
            "connected": len(seen),
            "poll_interval_s": poll,
            "template_ready_s": round(template_at, 3),
            "last_spawn_s": round(max(spawns) - wall0, 3) if spawns else None,
            "spawns_logged": len(spawns),
            "first_connected_s": round(ready[0], 3) if ready else None,
            "p50_connected_s": round(percentile(ready, 50), 3) if ready else None,
            "p90_connected_s": round(percentile(ready, 90), 3) if ready else None,
            "all_connected_s": round(ready[-1], 3) if complete else None,
            "lanes_per_s_after_template": round(len(ready) / (ready[-1] - template_at), 1)
            if complete and ready[-1] > template_at
            else None,
        }
        if not complete:
            result["startup"]["why_incomplete"] = stopped
        result["supervisor_log_when_connected"] = rig.sup_log.summary()
        say(f"  N={n}: {len(seen)}/{n} connected, last at {ready[-1] if ready else '-'} s")

        await asyncio.sleep(args.settle)
        with cpu_meter(groups) as idle:
            await asyncio.sleep(args.idle)
        idle_wall = idle.pop("wall_s")
        result["idle_cpu_percent_of_one_core"] = {
            name.removesuffix("_s"): round(100 * seconds / idle_wall, 2)
            for name, seconds in idle.items()
        }
        result["idle_window_s"] = round(idle_wall, 2)
        result["memory_idle"] = memory_report(n, sup.pid, template, rig)
        result["memory_idle"]["cow_sample"] = [
            cow_breakdown(template, pid) for pid in sorted(children_of(template))[:3]
        ]
        info: Any = await rig.redis.info("clients")
        result["redis_connected_clients"] = info.get("connected_clients")
        result["simulator_fds"] = fd_count(rig.pids()["simulator"] or 0)

        if not args.no_purchase and complete:
            sem = asyncio.Semaphore(args.concurrency)
            outcomes: dict[str, int] = {}

            async def buy(index: int, iid: str) -> None:
                async with sem:
                    try:
                        event = await purchase_via_redis(rig.redis, rig.keys, iid, f"warm-{index}")
                        key = f"{event['type']}:{event.get('result')}"
                    except Exception as exc:  # counted, never fatal: this pass is for memory
                        key = f"error:{type(exc).__name__}"
                    outcomes[key] = outcomes.get(key, 0) + 1

            t = time.perf_counter()
            await asyncio.gather(*(buy(i, iid) for i, iid in enumerate(rig.instance_ids)))
            result["purchase_pass"] = {
                "purchases": n,
                "concurrency": args.concurrency,
                "seconds": round(time.perf_counter() - t, 2),
                "outcomes": outcomes,
            }
            await asyncio.sleep(args.settle)
            result["memory_after_one_purchase_each"] = memory_report(n, sup.pid, template, rig)
        result["supervisor_log"] = rig.sup_log.summary()  # at the end: after the purchases
        killed_later = rig.sup_log.kills() - sum(
            result["supervisor_log_when_connected"]["kills_by_reason"].values()
        )
        if killed_later:
            result["lanes_killed_after_connected"] = killed_later
        result["supervisor_stop_s"] = await rig.stop_supervisor(limit_s=120)
        result["work_dir"] = str(rig.work) if args.keep else None
    result["run_seconds"] = round(time.perf_counter() - began, 1)
    return result


def _row(run: dict[str, Any]) -> list[Any]:
    s, mem, n = run["startup"], run["memory_idle"], run["n"]
    after_run = run.get("memory_after_one_purchase_each", {})
    after = after_run.get("per_lane", {})
    after_pss: Any = after.get("pss_mib")
    if after_run and after_run.get("lane_processes") != n:
        after_pss = f"{after_pss} ({after_run.get('lane_processes')} alive)"
    return [
        n,
        s["template_ready_s"],
        s["p50_connected_s"],
        s["all_connected_s"] if s["complete"] else f"{s['connected']}/{n}!",
        s["lanes_per_s_after_template"],
        mem["per_lane"]["pss_mib"],
        mem["per_lane"]["uss_mib"],
        after_pss,
        mem["supervisor"]["pss_mib"],
        mem["template"]["pss_mib"],
    ]


def memory_report(n: int, supervisor: int, template: int, rig: Rig) -> dict[str, Any]:
    lanes = sorted(children_of(template))
    lane_mem = memory_of(lanes)
    per = {
        k: round(v / max(lane_mem["processes"], 1), 2)
        for k, v in lane_mem.items()
        if k.endswith("_mib")
    }
    sup_mem = memory_of([supervisor])
    tmpl_mem = memory_of([template])
    host_total = lane_mem["pss_mib"] + sup_mem["pss_mib"] + tmpl_mem["pss_mib"]
    alive = max(lane_mem["processes"], 1)
    return {
        "lane_processes": lane_mem["processes"],
        "lanes_total": lane_mem,
        "per_lane": per,
        "supervisor": sup_mem,
        "template": tmpl_mem,
        "host_pss_per_lane_mib": round(host_total / alive, 2),
        "host_pss_note": "(lanes + template + supervisor) / lane processes alive",
        "simulator": memory_of([rig.pids()["simulator"] or 0]),
        "redis": memory_of([rig.pids()["redis"] or 0]),
        "mem_available_mib": round(mem_available_mib()),
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = raise_nofile()
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "sizes": args.size_list,
            "idle_window_s": args.idle,
            "settle_s": args.settle,
            "purchase_pass": not args.no_purchase,
            "purchase_concurrency": args.concurrency,
            "rlimit_nofile_after_raise": list(limits),
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
            "card_delay_s": 0,
        },
        "runs": [],
    }
    rows = []
    for n in args.size_list:
        why = precheck(n)
        if why is not None:
            say(f"N={n}: skipped: {why}")
            payload["runs"].append({"n": n, "skipped": why})
            rows.append([n, "skipped", *["-"] * 8])
            continue
        say(f"N={n}: starting")
        try:
            run = await one_size(n, args)
        except Exception as exc:  # a limit hit: record why, go on
            say(f"N={n}: failed: {exc!r}")
            payload["runs"].append(
                {"n": n, "failed": repr(exc), "traceback": traceback.format_exc()}
            )
            rows.append([n, "failed", *["-"] * 8])
            continue
        payload["runs"].append(run)
        rows.append(_row(run))
    payload["finished_at"] = now_iso()
    path = write_result(NAME, payload)
    print("Lanes started and connected per host (multipair supervise, simulator, zero delay)")
    print(
        table(
            [
                "N",
                "template s",
                "p50 conn s",
                "all conn s",
                "lanes/s",
                "PSS/lane",
                "USS/lane",
                "PSS/lane+tx",
                "sup PSS",
                "tmpl PSS",
            ],
            rows,
        )
    )
    print("(times from the supervisor's start; memory in MiB; +tx: after one purchase per lane)")
    for run in payload["runs"]:
        why = (
            run.get("skipped") or run.get("failed") or run.get("startup", {}).get("why_incomplete")
        )
        label = f"N={run['n']}"
        if why:
            print(f"{label}: {why}")
        if run.get("lanes_killed_after_connected"):
            kills = run["supervisor_log"]["kills_by_reason"]
            print(
                f"{label}: {run['lanes_killed_after_connected']} lanes killed after all had "
                f"connected (idle window and purchase pass): {kills}"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
