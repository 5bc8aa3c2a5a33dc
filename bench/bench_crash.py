"""Crash-to-ready: ``kill -9`` of a supervised lane until it is paired and connected again.

A fresh ``redis-server``, ``multipair simulate`` (own process) with L
terminals seeded as paired, L lane profiles, ``multipair supervise``. Then,
one lane at a time (each lane is killed at most once by default, so every
restart is a first restart, not a backoff), this script

1. reads the lane's pid from its state hash (status ``paired_connected``),
2. notes the newest entry of its event stream,
3. sends SIGKILL and stamps ``time.perf_counter_ns()``,
4. reads the events (``XREAD BLOCK``) and stamps, on arrival, the
   supervisor's ``lane_crashed`` (exit noticed), the ``lane_started`` of a
   new pid (respawned), and the next ``status_changed`` to
   ``paired_connected`` (ready); then checks the state hash shows
   ``paired_connected`` under the new pid.

Reported: p50/p95/p99/max of kill -> ready, and of its parts: kill -> crash
noticed, crash -> respawn, respawn -> ready. Run from the repository root::

    .venv/bin/python bench/bench_crash.py [--quick] [--kills 60] [--lanes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import traceback
from typing import Any

import orjson
from _common import (
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

NAME = "crash"

# The what-if pass (opt-in, --what-if): the same supervisor code with a given
# backoff base and tick, to show how much of crash-to-ready is the restart
# policy. Since the first restart is immediate it mostly shows the tick's share.
_WHAT_IF = """
import asyncio, sys
from multipair.config import Settings
from multipair.logs import configure_logging
from multipair.supervisor.host import Host, HostConfig
from multipair.supervisor.policy import RestartPolicy
host_id, capacity = sys.argv[1], int(sys.argv[2])
base, tick = float(sys.argv[3]), float(sys.argv[4])
settings = Settings.from_env(host_id=host_id)
policy = RestartPolicy(backoff_base_s=base, drain_timeout_s=settings.drain_timeout_s)
config = HostConfig(host_id=host_id, capacity=capacity, policy=policy, tick_s=tick)
configure_logging(settings.log_format)
asyncio.run(Host(settings, config).run())
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="kills in all (at least 50)")
    parser.add_argument("--lanes", type=int, default=0, help="lanes running (default: = kills)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between kills")
    parser.add_argument("--timeout", type=float, default=30.0, help="per kill")
    parser.add_argument("--quick", action="store_true", help="20 kills of 20 lanes")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="add a what-if pass (backoff base and tick below)",
    )
    parser.add_argument("--what-if-backoff", type=float, default=0.05, help="seconds")
    parser.add_argument("--what-if-tick", type=float, default=0.05, help="seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.kills = min(args.kills, 20)
    args.lanes = args.lanes or args.kills
    return args


async def kill_one(rig: Rig, iid: str, limit_s: float) -> dict[str, Any]:
    """One kill and its recovery; the stamps in ns from the kill, or why it failed."""
    state: Any = await rig.redis.hmget(rig.keys.state(iid), ["status", "pid"])
    status, pid_raw = (v.decode() if v else "" for v in state)
    if status != "paired_connected" or not pid_raw:
        return {"error": f"lane not ready before the kill: {status!r} pid {pid_raw!r}"}
    old_pid = int(pid_raw)
    stream = rig.keys.events(iid)
    last = await last_event_id(rig.redis, stream)
    os.kill(old_pid, signal.SIGKILL)
    t0 = time.perf_counter_ns()
    marks: dict[str, int] = {}
    new_pid: int | None = None
    deadline = time.monotonic() + limit_s
    while "ready" not in marks:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return {"error": f"not ready again within {limit_s} s", "marks": marks}
        reply: Any = await rig.redis.xread({stream: last}, count=100, block=left_ms)
        stamp = time.perf_counter_ns() - t0
        for entry_id, fields in reply[0][1] if reply else []:
            last = entry_id.decode()
            event = orjson.loads(fields[b"body"])
            kind = event["type"]
            if kind == "lane_crashed" and event.get("pid") == old_pid:
                marks.setdefault("crashed", stamp)
            elif kind == "lane_started" and event.get("pid") not in (None, old_pid):
                new_pid = int(event["pid"])
                marks.setdefault("respawned", stamp)
            elif (
                kind == "status_changed"
                and new_pid is not None
                and event.get("status") == "paired_connected"
            ):
                marks.setdefault("ready", stamp)
    # The state hash agrees (a new pid, connected)?
    state = await rig.redis.hmget(rig.keys.state(iid), ["status", "pid"])
    status, pid_raw = (v.decode() if v else "" for v in state)
    marks["state_checked"] = time.perf_counter_ns() - t0
    return {
        "old_pid": old_pid,
        "new_pid": new_pid,
        "state_agrees": status == "paired_connected" and pid_raw == str(new_pid),
        "marks_ns": marks,
    }


async def one_pass(
    args: argparse.Namespace, label: str, what_if: list[float] | None
) -> dict[str, Any]:
    kills: list[dict[str, Any]] = []
    out: dict[str, Any] = {"pass": label, "loadavg_before": loadavg()}
    async with Rig(args.lanes, keep=args.keep) as rig:
        command = None
        if what_if is not None:
            command = [
                sys.executable,
                "-c",
                _WHAT_IF,
                rig.host_id,
                str(args.lanes),
                *(str(x) for x in what_if),
            ]
            out["what_if"] = {"backoff_base_s": what_if[0], "tick_s": what_if[1]}
        rig.start_supervisor(capacity=args.lanes, command=command)
        out["supervisor_command"] = (
            " ".join(["python" if i == 0 else a for i, a in enumerate(rig.sup_command)])
            if what_if is None
            else "python -c <what-if wrapper around multipair.supervisor.host.Host>"
        )
        await rig.template_pid()
        _, stopped = await rig.wait_connected(120, max_kills=5)
        if stopped is not None:
            raise RuntimeError(f"lanes did not all connect: {stopped}")
        await asyncio.sleep(2)
        for n in range(args.kills):
            iid = rig.instance_ids[n % args.lanes]
            result = await kill_one(rig, iid, args.timeout)
            result["lane"] = n % args.lanes
            kills.append(result)
            if "error" in result:
                say(f"kill {n}: {result['error']}")
            await asyncio.sleep(args.pause)
        out["supervisor_log"] = rig.sup_log.summary()
    good = [k for k in kills if "error" not in k]

    def part(a: str | None, b: str) -> list[int]:
        return [
            k["marks_ns"][b] - (k["marks_ns"][a] if a else 0)
            for k in good
            if b in k["marks_ns"] and (a is None or a in k["marks_ns"])
        ]

    out["results"] = {
        "kills": len(kills),
        "recovered": len(good),
        "failed": [k for k in kills if "error" in k],
        "state_agreed": sum(1 for k in good if k["state_agrees"]),
        "kill_to_ready_ms": summary_ms(part(None, "ready")),
        "kill_to_crash_noticed_ms": summary_ms(part(None, "crashed")),
        "crash_noticed_to_respawn_ms": summary_ms(part("crashed", "respawned")),
        "respawn_to_ready_ms": summary_ms(part("respawned", "ready")),
        "kill_to_state_checked_ms": summary_ms(part(None, "state_checked")),
    }
    out["raw_kill_to_ready_ms"] = [round(v / 1e6, 3) for v in part(None, "ready")]
    return out


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "kills": args.kills,
            "lanes": args.lanes,
            "pause_s": args.pause,
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
        },
        "loadavg_before": loadavg(),
    }
    passes = [("supervise", None)]
    if args.what_if:
        passes.append(("what-if", [args.what_if_backoff, args.what_if_tick]))
    payload["passes"] = []
    for label, what_if in passes:
        say(f"{label}: {args.kills} kills of {args.lanes} lanes")
        try:
            payload["passes"].append(await one_pass(args, label, what_if))
        except Exception as exc:  # the what-if uses internals that may move: say so
            say(f"{label}: failed: {exc!r}")
            payload["passes"].append(
                {"pass": label, "failed": repr(exc), "traceback": traceback.format_exc()}
            )
    payload["finished_at"] = now_iso()
    path = write_result(NAME, payload)
    rows = []
    for p in payload["passes"]:
        if "failed" in p:
            rows.append([p["pass"], "failed", "", "", "", ""])
            continue
        r = p["results"]
        for label, key in (
            ("kill -> ready (paired_connected, new pid)", "kill_to_ready_ms"),
            ("  kill -> lane_crashed published", "kill_to_crash_noticed_ms"),
            ("  lane_crashed -> lane_started (respawn)", "crash_noticed_to_respawn_ms"),
            ("  lane_started -> paired_connected", "respawn_to_ready_ms"),
        ):
            st = r[key]
            rows.append(
                [
                    f"{p['pass']}: {label}",
                    st.get("count"),
                    st.get("p50"),
                    st.get("p95"),
                    st.get("p99"),
                    st.get("max"),
                ]
            )
    print(f"Crash-to-ready: kill -9 of a supervised lane, {args.lanes} lanes running (ms)")
    print(table(["interval", "n", "p50", "p95", "p99", "max"], rows))
    for p in payload["passes"]:
        if "results" in p:
            r = p["results"]
            print(
                f"{p['pass']}: recovered {r['recovered']}/{r['kills']}; "
                f"state hash agreed {r['state_agreed']}"
            )
    if len(payload["passes"]) > 1:
        print(
            f"what-if = backoff base {args.what_if_backoff * 1000:.0f} ms and a "
            f"{args.what_if_tick * 1000:.0f} ms tick (default: first restart at once, 500 ms base, "
            "500 ms tick; an exit wakes the tick)"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
