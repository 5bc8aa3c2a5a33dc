"""Failover across hosts: how long lanes of a killed supervisor take to run elsewhere, and
what the leases cost in Redis traffic.

A fresh ``redis-server``, ``multipair simulate`` with N terminals (default
12) seeded as paired, N lane profiles, and three supervisors (``host-a``,
``host-b``, ``host-c``, capacity N each) sharing them (N/3 each). Then, for
each of ``--kills`` rounds (default 5), the next supervisor in turn is killed
with SIGKILL (its template and lanes die with it) and timed:

- **failover time** of each of its lanes: from the kill to the
  ``status_changed`` ``paired_connected`` event its new owner publishes (the
  event's stream id is Redis's clock, in ms; the kill is stamped on the same
  machine's clock just before ``kill``). Per kill: when the last lane was back
  (the "lanes live elsewhere" figure of issue 7, goal < 10 s), p50 and max
  over all lanes of all kills;
- **rejoin**: the killed host is started again; the time until the lanes
  are spread evenly again (lanes moved to it between transactions).

Then **lease traffic**: for ``--traffic-seconds`` (default 60) with the three
hosts idle, Redis ``MONITOR`` counts the calls of the lease renewal script
on lane leases (``EVAL`` of its text in the hosts' renewal pipelines, or
``EVALSHA`` of its SHA1), per lane per minute, beside every command Redis
ran (``INFO commandstats`` delta) per lane per minute. The expected renewal
figure is 60 / renewal period (1.5 s) = 40.

Prints a table and writes ``bench/results/failover.json``. Run from the
repository root::

    .venv/bin/python bench/bench_failover.py [--lanes 12] [--kills 5] [--traffic-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import subprocess
import sys
import time
from typing import Any

import orjson
from _common import (
    Rig,
    _die_with_us,
    machine_facts,
    now_iso,
    percentile,
    say,
    supervise_command,
    table,
    write_result,
)
from _common import run as run_main

from multipair import leases as lease_module
from multipair.leases import parse_lease
from multipair.supervisor.policy import RestartPolicy

NAME = "failover"
HOSTS = ("host-a", "host-b", "host-c")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=12, help="lanes (terminals), N")
    parser.add_argument("--kills", type=int, default=5, help="supervisors killed, one at a time")
    parser.add_argument("--traffic-seconds", type=float, default=60.0, help="MONITOR window")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser.parse_args(argv)


class Fleet:
    """Three supervisors over one rig."""

    def __init__(self, rig: Rig, capacity: int) -> None:
        self.rig = rig
        self.capacity = capacity
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host_id: str) -> None:
        with (self.rig.work / f"supervisor-{host_id}.log").open("ab") as log:
            self.procs[host_id] = subprocess.Popen(  # noqa: S603
                supervise_command(host_id, self.capacity),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.rig._env(MULTIPAIR_HOST_ID=host_id),
                preexec_fn=_die_with_us,
            )

    def kill(self, host_id: str) -> float:
        """SIGKILL; the wall-clock time (s) just before it."""
        proc = self.procs.pop(host_id)
        at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return at

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    async def owners(self) -> dict[str, str | None]:
        rig = self.rig
        async with rig.redis.pipeline(transaction=False) as pipe:
            for iid in rig.instance_ids:
                pipe.get(rig.keys.lease(iid))
            replies: list[Any] = await pipe.execute()
        out: dict[str, str | None] = {}
        for iid, raw in zip(rig.instance_ids, replies, strict=True):
            lease = parse_lease(raw)
            out[iid] = None if lease is None else lease.host_id
        return out

    async def wait_even(self, hosts: tuple[str, ...], within_s: float | None = None) -> float:
        """Until the lanes are spread over ``hosts`` within one of each other and all are
        connected under their owner; seconds it took (default limit: 120 s + 0.2 s a lane,
        as starting hundreds of lanes on a shared 2-core machine takes a while)."""
        t = time.perf_counter()
        if within_s is None:
            within_s = 120 + 0.2 * len(self.rig.instance_ids)
        deadline = time.monotonic() + within_s
        share = -(-len(self.rig.instance_ids) // len(hosts))
        while time.monotonic() < deadline:
            owners = await self.owners()
            counts = {h: 0 for h in hosts}
            for host in owners.values():
                if host in counts:
                    counts[host] += 1
            states = await self.rig.lane_states()
            spread_ok = sum(counts.values()) == len(owners) and all(
                share - 1 <= c <= share for c in counts.values()
            )
            if spread_ok and all(status == "paired_connected" for status, _ in states):
                return round(time.perf_counter() - t, 3)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"lanes not spread over {hosts} within {within_s} s: {counts}")


async def back_online(rig: Rig, iid: str, after: str, deadline: float) -> float | None:
    """Stream time (s, Redis clock) of the first ``paired_connected`` after entry ``after``."""
    stream = rig.keys.events(iid)
    last = after
    while time.monotonic() < deadline:
        reply: Any = await rig.redis.xread({stream: last}, count=100, block=1000)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id.decode()
                event = orjson.loads(fields[b"body"])
                if event["type"] == "status_changed" and event.get("status") == "paired_connected":
                    return int(last.partition("-")[0]) / 1000
    return None


async def one_kill(fleet: Fleet, victim: str) -> dict[str, Any]:
    rig = fleet.rig
    owners = await fleet.owners()
    lanes = [iid for iid, host in owners.items() if host == victim]
    marks = {}
    for iid in lanes:
        newest: Any = await rig.redis.xrevrange(rig.keys.events(iid), count=1)
        marks[iid] = newest[0][0].decode() if newest else "0"
    killed_at = fleet.kill(victim)
    deadline = time.monotonic() + 60
    backs = await asyncio.gather(*(back_online(rig, iid, marks[iid], deadline) for iid in lanes))
    times = [None if b is None else round(b - killed_at, 3) for b in backs]
    after = await fleet.owners()
    return {
        "victim": victim,
        "lanes": len(lanes),
        "per_lane_s": times,
        "all_back_s": None if None in times else max(t for t in times if t is not None),
        "new_owners": sorted({after[iid] or "-" for iid in lanes}),
    }


async def lease_traffic(rig: Rig, seconds: float) -> dict[str, Any]:
    sha = hashlib.sha1(lease_module.RENEW_IF_HELD_LUA.encode()).hexdigest()  # noqa: S324 - Redis's own id
    before: Any = await rig.redis.info("commandstats")
    renewals = evalsha_total = 0
    monitor_client = rig.redis.client()
    deadline = time.monotonic() + seconds
    async with monitor_client.monitor() as monitor:
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                    info = await monitor.next_command()
            except TimeoutError:
                break
            command = str(info.get("command", ""))
            head = command[:8].upper()
            if head.startswith("EVALSHA"):
                evalsha_total += 1
            # A host sends its renewals as one pipeline of EVAL (the script's
            # text); the host claim's renewal runs the same script on `:claim`.
            lease = head.startswith("EVAL") and ":lease" in command
            if lease and (sha in command or "PEXPIRE" in command):
                renewals += 1
    after: Any = await rig.redis.info("commandstats")
    await monitor_client.aclose()

    def calls(stats: dict[str, Any]) -> int:
        return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))

    lanes, minutes = len(rig.instance_ids), seconds / 60
    policy = RestartPolicy()
    return {
        "window_s": seconds,
        "renew_script_sha1": sha,
        "renewals": renewals,
        "renewals_per_lane_per_min": round(renewals / lanes / minutes, 2),
        "expected_per_lane_per_min": round(60 / policy.renew_every_s, 2),
        "evalsha_per_lane_per_min": round(evalsha_total / lanes / minutes, 2),
        "all_commands_per_lane_per_min": round((calls(after) - calls(before)) / lanes / minutes, 2),
        "note": "all_commands includes the lanes' own heartbeats, reads and the hosts' ticks",
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    policy = RestartPolicy()
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": now_iso(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_facts(),
        "parameters": {
            "lanes": args.lanes,
            "hosts": list(HOSTS),
            "kills": args.kills,
            "traffic_window_s": args.traffic_seconds,
            "lease_ttl_s": policy.lease_ttl_s,
            "renew_every_s": policy.renew_every_s,
            "lease_margin_s": policy.lease_margin_s,
            "host_live_s": policy.host_live_s,
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
        },
    }
    async with Rig(args.lanes, keep=args.keep) as rig:
        fleet = Fleet(rig, capacity=args.lanes)
        try:
            for host in HOSTS:
                fleet.start(host)
            say(f"{args.lanes} lanes over {len(HOSTS)} hosts: starting")
            payload["initial_spread_s"] = await fleet.wait_even(HOSTS)
            kills = []
            for round_ in range(args.kills):
                victim = HOSTS[round_ % len(HOSTS)]
                result = await one_kill(fleet, victim)
                say(f"kill {round_ + 1}: {victim}: all lanes back in {result['all_back_s']} s")
                kills.append(result)
                survivors = tuple(h for h in HOSTS if h != victim)
                result["survivors_even_s"] = await fleet.wait_even(survivors)
                fleet.start(victim)
                try:
                    result["rejoin_even_s"] = await fleet.wait_even(HOSTS)
                except RuntimeError as exc:  # a finding, not a crash: stop killing, report it
                    result["rejoin_even_s"] = None
                    result["rejoin_not_even"] = str(exc)
                    say(f"kill {round_ + 1}: rejoin: {exc}")
                    break
            payload["kills"] = kills
            say(f"lease traffic: MONITOR for {args.traffic_seconds:g} s")
            payload["lease_traffic"] = await lease_traffic(rig, args.traffic_seconds)
        finally:
            fleet.stop_all()
    per_lane = sorted(t for k in payload["kills"] for t in k["per_lane_s"] if t is not None)
    per_kill = sorted(k["all_back_s"] for k in payload["kills"] if k["all_back_s"] is not None)
    missing = sum(1 for k in payload["kills"] for t in k["per_lane_s"] if t is None)
    payload["failover_s"] = {
        "lanes_measured": len(per_lane),
        "lanes_not_back_within_60s": missing,
        "per_lane_p50": round(percentile(per_lane, 50), 3),
        "per_lane_max": per_lane[-1] if per_lane else None,
        "per_kill_all_back_p50": round(percentile(per_kill, 50), 3),
        "per_kill_all_back_max": per_kill[-1] if per_kill else None,
    }
    payload["finished_at"] = now_iso()
    path = write_result(NAME, payload)
    f, traffic = payload["failover_s"], payload["lease_traffic"]
    print(
        f"Failover: {args.lanes} lanes on 3 hosts, {args.kills} x kill -9 of one supervisor "
        f"(lease TTL {policy.lease_ttl_s:g} s, renewal every {policy.renew_every_s:g} s)"
    )
    print(
        table(
            ["figure", "value"],
            [
                ["failover per lane p50 (s)", f["per_lane_p50"]],
                ["failover per lane max (s)", f["per_lane_max"]],
                ["all lanes of a kill back p50 (s)", f["per_kill_all_back_p50"]],
                ["all lanes of a kill back max (s)", f["per_kill_all_back_max"]],
                ["lanes not back within 60 s", missing],
                [
                    "rejoin: even again p50 (s)",
                    _p50([k["rejoin_even_s"] for k in payload["kills"]]),
                ],
                ["lease renewals / lane / min", traffic["renewals_per_lane_per_min"]],
                ["  expected (60 / renewal period)", traffic["expected_per_lane_per_min"]],
                ["all Redis commands / lane / min", traffic["all_commands_per_lane_per_min"]],
            ],
        )
    )
    print(f"wrote {path}")
    return 0


def _p50(values: list[float | None]) -> float | str:
    known = sorted(v for v in values if v is not None)
    if len(known) < len(values):  # a rejoin that did not even out in time
        return f"not even in time ({len(values) - len(known)} of {len(values)})"
    return round(percentile(known, 50), 3)


if __name__ == "__main__":
    sys.exit(run_main(main()))
