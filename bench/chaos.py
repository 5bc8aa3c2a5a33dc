"""``make chaos``: lanes against the simulator under a seeded storm of faults.

A private ``redis-server`` (AOF, ``appendfsync always``), ``multipair
simulate`` with L terminals seeded as paired, L lanes under ``multipair
supervise``. A POS driver pushes purchases through raw Redis (``XADD``, one
after another on each lane, some ``command_id`` re-sent on purpose, the
answers read with ``XREAD``) while a seeded fault loop, every few seconds,
does one of:

- ``lane_kill``: ``kill -9`` of a lane process;
- ``supervisor_kill``: ``kill -9`` of the supervisor (its lanes go with the
  template), restarted a moment later;
- ``redis_restart``: ``kill -9`` of ``redis-server``, down 1-4 s, restarted on
  the same port from its AOF; then every lane is asked ``terminal_status``
  and the time until the last one answers is recorded;
- ``terminal_drop``: the simulator drops the connection now, or at a step of
  the next transaction (after the request arrived, after the result was
  produced but before it was sent);
- ``hostile_command``: a bad entry (not JSON, a non-UTF-8 field name,
  repeated fields, duplicate JSON keys, an ``expires_at`` at the calendar's
  edge, an oversize body, missing fields); the ones naming a ``pos_ref_id``
  must never reach the terminal;
- ``hostile_frame``: the simulator sends the lane garbage or a frame with a
  bad signature.

At the end the driver waits for every answer, then checks each purchase
against the terminal's own truth (the simulator's per-``pos_ref_id`` request
counts and its log of finished transactions) and prints, and writes to
``bench/results/chaos.json``: purchases, faults by kind, lost (no outcome),
duplicated (two different outcomes, or more outcome events than sends),
double-sent (a request reaching the terminal twice), mismatched (the lane's
outcome differs from the terminal's), unknown, hostile commands charged,
lane exits caused by Redis outages, the time until every lane answered after
each Redis restart, and p50/p99 outcome latency.

Bounded: faults for ``--duration`` seconds (default 150), then at most 90 s of
draining. Replay any run with its seed::

    .venv/bin/python bench/chaos.py --seed 1234 [--lanes 6] [--duration 150]

Exit status: 0 when lost, duplicated, double-sent, mismatched, hostile
charged and lane exits caused by Redis outages are all 0, else 1 (``unknown``
outcomes and other exits are reported, not failed on: an unknown is an
honest answer, and the faults kill lanes on purpose).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import os
import random
import secrets
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from _common import (
    Rig,
    machine_facts,
    now_iso,
    percentile,
    raise_nofile,
    say,
    table,
    write_result,
)
from _common import run as run_main
from redis.exceptions import RedisError

NAME = "chaos"
FINAL = frozenset({"transaction_completed", "command_rejected"})
ANSWERS = frozenset({"terminal_status", "command_rejected"})
REDIS_GRACE_S = 10.0
"""After Redis is back, exits within this long are blamed on the outage."""

# cents -> what the simulator does (multipair.simulator.rules)
AMOUNTS = [
    (1000, 60),  # approve
    (1051, 15),  # decline
    (1054, 8),  # slow card, ~3 s
    (1058, 8),  # approved, dropped before the result is sent
    (1059, 9),  # dropped right after the request arrived, approved internally
]
FAULTS = [
    ("lane_kill", 3.0),
    ("terminal_drop", 3.0),
    ("hostile_command", 2.0),
    ("hostile_frame", 2.0),
    ("redis_restart", 1.5),
    ("supervisor_kill", 1.0),
]
DROP_STEPS = ["now", "after_request_received", "after_result_before_send"]


@dataclass
class Sent:
    lane: int
    command_id: str
    pos_ref_id: str
    cents: int
    sent_at: float
    sends: int = 1
    answered_at: float | None = None
    results: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)


@dataclass
class Outage:
    down_at: float
    up_at: float = 0.0
    down_s: float = 0.0
    all_answered_s: float | None = None
    per_lane_s: list[float] = field(default_factory=list)


class Chaos:
    def __init__(self, rig: Rig, args: argparse.Namespace, rng: random.Random) -> None:
        self.rig = rig
        self.args = args
        self.rng = rng
        self.keys = rig.keys
        self.sent: dict[str, Sent] = {}
        self.answered: dict[str, asyncio.Event] = {}
        self.probes: dict[str, asyncio.Event] = {}
        self.probing: list[asyncio.Task[None]] = []
        self.hostile_refs: set[str] = set()
        self.faults: Counter[str] = Counter()
        self.outages: list[Outage] = []
        self.stopping = False
        self.redis_down = False
        self.sup_restarts = 0
        self.t0 = time.monotonic()
        self.client = rig.redis
        self.http: aiohttp.ClientSession | None = None

    # -- Redis that may be away -------------------------------------------------------

    async def call(self, fn: Any, *a: Any, **kw: Any) -> Any:
        """Run a Redis call, retrying while the server is down (a POS backend would)."""
        while True:
            try:
                return await fn(*a, **kw)
            except (RedisError, OSError):
                if self.stopping and not self.redis_down:
                    raise
                await asyncio.sleep(0.1)

    # -- the POS driver ----------------------------------------------------------------

    async def reader(self, lane: int, iid: str) -> None:
        stream = self.keys.events(iid)
        last = "0"
        while True:  # until cancelled, once every answer and probe is in
            try:
                reply: Any = await self.client.xread({stream: last}, count=200, block=500)
            except (RedisError, OSError):
                await asyncio.sleep(0.1)
                continue
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    self.on_event(orjson.loads(fields[b"body"]))

    def on_event(self, body: dict[str, Any]) -> None:
        command_id = body.get("command_id")
        kind = body.get("type")
        if command_id in self.probes and kind in ANSWERS:
            self.probes[command_id].set()
            return
        sent = self.sent.get(command_id) if isinstance(command_id, str) else None
        if sent is None or kind not in FINAL:
            return
        if kind == "transaction_completed":
            sent.results.append(str(body.get("result")))
        else:
            sent.rejections.append(str(body.get("reason")))
        if sent.answered_at is None:
            sent.answered_at = time.monotonic()
            self.answered[sent.command_id].set()

    async def driver(self, lane: int, iid: str, seed: int) -> None:
        n = 0
        stream = self.keys.commands(iid)
        # Each lane's amounts and re-sends from its own generator, so the fault
        # schedule (self.rng) does not depend on how fast purchases go.
        rng = random.Random(f"{seed}-{lane}")
        while not self.stopping:
            n += 1
            cents = rng.choices([a for a, _ in AMOUNTS], [w for _, w in AMOUNTS])[0]
            ref = f"ch{seed}-{lane}-{n}"
            body = {"command_id": f"c-{ref}", "type": "purchase", "pos_ref_id": ref}
            body["amount_cents"] = cents
            sent = Sent(lane, body["command_id"], ref, cents, time.monotonic())
            self.sent[sent.command_id] = sent
            done = self.answered[sent.command_id] = asyncio.Event()
            entry = {"v": "1", "body": orjson.dumps(body)}
            await self.call(self.client.xadd, stream, entry)
            if rng.random() < 0.1:  # the POS re-sends, as after a timeout
                await asyncio.sleep(rng.uniform(0, 0.5))
                await self.call(self.client.xadd, stream, entry)
                sent.sends += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(45):
                    await done.wait()

    # -- faults ------------------------------------------------------------------------

    async def faults_loop(self) -> None:
        end = self.t0 + self.args.duration
        last_big = -100.0
        while time.monotonic() < end:
            await asyncio.sleep(self.rng.uniform(1.5, 4.0))
            kind = self.rng.choices([k for k, _ in FAULTS], [w for _, w in FAULTS])[0]
            now = time.monotonic()
            if kind in ("redis_restart", "supervisor_kill"):
                if now - last_big < 15:
                    kind = "lane_kill"
                else:
                    last_big = now
            try:
                await getattr(self, kind)()
                self.faults[kind] += 1
            except Exception as exc:  # a fault that could not be applied is reported
                say(f"  fault {kind} not applied: {type(exc).__name__}: {exc}")
                self.faults[f"{kind}_not_applied"] += 1

    def lane_pick(self) -> tuple[int, str]:
        index = self.rng.randrange(len(self.rig.instance_ids))
        return index, self.rig.instance_ids[index]

    async def lane_kill(self) -> None:
        _, iid = self.lane_pick()
        pid = await self.call(self.client.hget, self.keys.state(iid), "pid")
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    async def supervisor_kill(self) -> None:
        proc = self.rig.sup_proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        # supervisor_watch restarts it (retrying while the old host claim lapses)

    async def supervisor_watch(self) -> None:
        while not self.stopping:
            proc = self.rig.sup_proc
            if proc is None or proc.poll() is not None:
                await asyncio.sleep(1.0)
                if not self.stopping:
                    self.rig.start_supervisor()
                    self.sup_restarts += 1
            await asyncio.sleep(0.3)

    async def redis_restart(self) -> None:
        server = self.rig.redis_server
        outage = Outage(down_at=time.monotonic())
        self.redis_down = True
        server.kill()
        await asyncio.sleep(self.rng.uniform(1.0, 4.0))
        server.start()
        outage.up_at = time.monotonic()
        outage.down_s = round(outage.up_at - outage.down_at, 3)
        self.redis_down = False
        self.outages.append(outage)
        self.probing.append(asyncio.get_running_loop().create_task(self.probe_all(outage)))

    async def probe_all(self, outage: Outage) -> None:
        """Ask every lane terminal_status; when did the last one answer?"""
        waits = []
        for iid in self.rig.instance_ids:
            command_id = f"probe-{secrets.token_hex(6)}"
            event = self.probes[command_id] = asyncio.Event()
            body = {"command_id": command_id, "type": "terminal_status"}
            await self.call(
                self.client.xadd, self.keys.commands(iid), {"v": "1", "body": orjson.dumps(body)}
            )
            waits.append(event)

        async def timed(event: asyncio.Event) -> float | None:
            try:
                async with asyncio.timeout(60):
                    await event.wait()
            except TimeoutError:
                return None
            return time.monotonic() - outage.up_at

        times = await asyncio.gather(*(timed(e) for e in waits))
        outage.per_lane_s = [round(t, 3) for t in times if t is not None]
        if len(outage.per_lane_s) == len(times):
            outage.all_answered_s = max(outage.per_lane_s)

    async def post(self, serial: str, path: str, body: dict[str, Any]) -> None:
        assert self.http is not None
        url = f"{self.rig.manifest['control_url']}/terminals/{serial}/{path}"
        async with self.http.post(url, json=body) as resp:
            await resp.read()

    def serial_pick(self) -> str:
        index, _ = self.lane_pick()
        return str(self.rig.manifest["terminals"][index]["serial"])

    async def terminal_drop(self) -> None:
        await self.post(self.serial_pick(), "drop", {"at": self.rng.choice(DROP_STEPS)})

    async def hostile_frame(self) -> None:
        kind = self.rng.choice(["garbage", "bad_signature"])
        for _ in range(self.rng.randint(1, 12)):
            await self.post(self.serial_pick(), "inject", {"kind": kind})

    async def hostile_command(self) -> None:
        _, iid = self.lane_pick()
        stream = self.keys.commands(iid)
        tag = secrets.token_hex(4)
        ref = f"evil-{tag}"
        purchase = {"command_id": f"h-{tag}", "type": "purchase", "pos_ref_id": ref}
        purchase["amount_cents"] = 100
        valid = orjson.dumps(purchase)
        kind = self.rng.randrange(7)
        if kind == 0:
            fields: list[Any] = ["v", "1", "body", b"{not json"]
        elif kind == 1:
            fields = ["v", "1", "body", b"{}", b"\xff", b"1"]
        elif kind == 2:
            fields = ["v", "1", "body", valid, "body", valid]
        elif kind == 3:
            dup = valid[:-1] + b',"amount_cents":99999}'
            fields = ["v", "1", "body", dup]
        elif kind == 4:
            edge = {**purchase, "expires_at": "9999-12-31T23:59:59-23:59"}
            fields = ["v", "1", "body", orjson.dumps(edge)]
        elif kind == 5:
            big = {**purchase, "pad": "x" * 70_000}
            fields = ["v", "1", "body", orjson.dumps(big)]
        else:
            fields = ["v", "1", "body", orjson.dumps({"type": "purchase", "pos_ref_id": ref})]
        self.hostile_refs.add(ref)
        await self.call(self.client.execute_command, "XADD", stream, "*", *fields)

    # -- the end -----------------------------------------------------------------------

    async def drain(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if all(s.answered_at is not None for s in self.sent.values()):
                return
            await asyncio.sleep(0.5)


def _terminal_truth(rig: Rig) -> dict[str, bool]:
    """pos_ref_id -> approved, from the simulator's log of finished transactions."""
    truth: dict[str, bool] = {}
    path = rig.work / "simulator.log"
    with path.open("rb") as f:
        for line in f:
            if b"transaction_finished" not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                if entry.get("event") == "transaction_finished" and entry.get("pos_ref_id"):
                    truth[entry["pos_ref_id"]] = bool(entry.get("success"))
    return truth


def _exits(rig: Rig) -> list[dict[str, Any]]:
    """Lane exits the supervisor saw that nobody asked for (self-exits, watchdog kills)."""
    found = []
    path = rig.work / "supervisor.log"
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for line in f:
            if b"lane crashed" not in line and b"lane killed" not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                event = entry.get("event")
                how = str(entry.get("how") or "")
                self_exit = event == "lane crashed" and how.startswith("exit code")
                if self_exit or event == "lane killed":
                    found.append(entry)
    return found


def _wall(entry: dict[str, Any]) -> float | None:
    stamp = entry.get("timestamp")
    if not isinstance(stamp, str):
        return None
    with contextlib.suppress(ValueError):
        return _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None


async def main(args: argparse.Namespace) -> int:
    raise_nofile()
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    rng = random.Random(seed)
    say(f"chaos: seed {seed}, {args.lanes} lanes, {args.duration:g} s of faults")
    async with Rig(args.lanes, sim_log_level="info", redis_aof=True) as rig:
        # Again on the same port and folder, now with appendfsync always.
        rig.redis_server.kill()
        rig.redis_server.extra_args = (*rig.redis_server.extra_args, "--appendfsync", "always")
        rig.redis_server.start()
        await rig.redis.aclose()
        rig.redis = aioredis.Redis.from_url(rig.redis_server.url, client_name="chaos")
        rig.start_supervisor()
        _, why = await rig.wait_connected(120)
        if why:
            say(f"lanes did not come up: {why}")
            return 2
        chaos = Chaos(rig, args, rng)
        wall0 = time.time()
        mono0 = time.monotonic()
        async with aiohttp.ClientSession() as http:
            chaos.http = http
            readers = [
                asyncio.create_task(chaos.reader(i, iid)) for i, iid in enumerate(rig.instance_ids)
            ]
            watch = asyncio.create_task(chaos.supervisor_watch())
            drivers = [
                asyncio.create_task(chaos.driver(i, iid, seed))
                for i, iid in enumerate(rig.instance_ids)
            ]
            await chaos.faults_loop()
            say("faults over; draining")
            chaos.stopping = True
            await asyncio.gather(*drivers)
            await chaos.drain(90)
            await asyncio.gather(*chaos.probing)  # each bounded by 60 s
            for task in (*readers, watch):
                task.cancel()
            await asyncio.gather(*readers, watch, return_exceptions=True)
        truth = _terminal_truth(rig)
        snapshots: dict[str, Any] = {}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{rig.manifest['control_url']}/terminals") as resp,
        ):
            listing = await resp.json()
        for term in listing if isinstance(listing, list) else listing.get("terminals", []):
            snapshots[term["serial"]] = term
        requests: Counter[str] = Counter()
        for term in snapshots.values():
            requests.update(term.get("purchase_requests") or {})
        exits = _exits(rig)

    purchases = list(chaos.sent.values())
    lost = [s.pos_ref_id for s in purchases if s.answered_at is None]
    duplicated = [
        s.pos_ref_id for s in purchases if len(set(s.results)) > 1 or len(s.results) > s.sends
    ]
    double_sent = {ref: n for ref, n in requests.items() if n > 1}
    mismatched = []
    unknown = 0
    for s in purchases:
        if not s.results:
            continue
        result = s.results[0]
        if result == "unknown":
            unknown += 1
            continue
        approved = truth.get(s.pos_ref_id)
        if (result == "success") != (approved is True):
            mismatched.append(s.pos_ref_id)
    hostile_charged = sorted(ref for ref in chaos.hostile_refs if requests.get(ref))
    windows = [
        (wall0 + (o.down_at - mono0), wall0 + (o.up_at - mono0) + REDIS_GRACE_S)
        for o in chaos.outages
    ]
    redis_exits = [
        e for e in exits if (w := _wall(e)) is not None and any(lo <= w <= hi for lo, hi in windows)
    ]
    latencies = sorted(
        (s.answered_at - s.sent_at) * 1000 for s in purchases if s.answered_at is not None
    )
    results = Counter(s.results[0] if s.results else "none" for s in purchases)
    rejected = Counter(r for s in purchases for r in s.rejections)
    ok = not (lost or duplicated or double_sent or mismatched or hostile_charged or redis_exits)
    after = [o.all_answered_s for o in chaos.outages]
    say()
    say(
        table(
            ["figure", "value"],
            [
                ["seed", seed],
                ["purchases", len(purchases)],
                ["results", dict(results)],
                ["rejections of purchases", dict(rejected)],
                ["faults", dict(chaos.faults)],
                ["supervisor restarts", chaos.sup_restarts],
                ["lost", len(lost)],
                ["duplicated", len(duplicated)],
                ["double-sent", len(double_sent)],
                ["mismatched", len(mismatched)],
                ["unknown", unknown],
                ["hostile commands charged", len(hostile_charged)],
                ["unplanned lane exits", len(exits)],
                ["lane exits caused by Redis outages", len(redis_exits)],
                ["all lanes answering after Redis restart (s)", after],
                ["outcome latency p50 (ms)", round(percentile(latencies, 50), 1)],
                ["outcome latency p99 (ms)", round(percentile(latencies, 99), 1)],
                ["verdict", "held" if ok else "FAILED"],
            ],
        )
    )
    path = write_result(
        NAME,
        {
            "when": now_iso(),
            "machine": machine_facts(),
            "params": {"seed": seed, "lanes": args.lanes, "duration_s": args.duration},
            "purchases": len(purchases),
            "results": dict(results),
            "rejections_of_purchases": dict(rejected),
            "resent_command_ids": sum(1 for s in purchases if s.sends > 1),
            "faults": dict(chaos.faults),
            "supervisor_restarts": chaos.sup_restarts,
            "lost": lost,
            "duplicated": duplicated,
            "double_sent": double_sent,
            "mismatched": mismatched,
            "unknown": unknown,
            "hostile_commands": len(chaos.hostile_refs),
            "hostile_commands_charged": hostile_charged,
            "unplanned_lane_exits": len(exits),
            "lane_exits_caused_by_redis_outages": len(redis_exits),
            "redis_outages": [
                {
                    "down_s": o.down_s,
                    "all_lanes_answering_s": o.all_answered_s,
                    "per_lane_s": o.per_lane_s,
                }
                for o in chaos.outages
            ],
            "outcome_latency_ms": {
                "p50": round(percentile(latencies, 50), 1),
                "p99": round(percentile(latencies, 99), 1),
                "max": round(latencies[-1], 1) if latencies else None,
                "n": len(latencies),
            },
            "verdict": "held" if ok else "failed",
        },
    )
    say(f"wrote {path}")
    return 0 if ok else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--lanes", type=int, default=6)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of faults")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        sys.exit(run_main(main(parse_args(sys.argv[1:]))))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.exit(2)
