"""Pay at table round trips, and what a preauthorisation or a Zip purchase costs beside a purchase.

One simulator (``multipair simulate``, its own process, zero card delay), one
terminal seeded as paired, one lane under ``multipair supervise`` (issue 17).
Pay at table is switched on with a ``set_table_config`` command (XADD, as a
POS backend would), then:

- **pay at table**: a POS task in this process (its own Redis connection,
  ``XREAD BLOCK`` on the lane's events) answers ``bill_requested`` and
  ``bill_payment_reported`` from a dict of bills by XADDing ``bill_details``.
  The terminal side is driven through the simulator's control API, one request
  at a time: ``POST /terminals/<serial>/pat/bill`` (get_bill_details), then
  ``POST /terminals/<serial>/pat/pay`` (a card bill_payment, which the
  simulated bank approves first), first each on a bill of its own, then all on
  one bill (whose ``bill_payment_history``, which the lane fills from every
  payment it stored, grows by one each time). The time is from the HTTP call to its
  reply being read: the terminal asks, the lane publishes the event, the POS
  answers, the lane relays the answer to the terminal, the simulator answers
  the HTTP call. **The HTTP control call (aiohttp client and server, JSON of
  the terminal's state document) is included.** Also stamped: when the POS
  read the event, and when its ``bill_details`` XADD returned, which split
  the round trip into "ask -> event read" and "answer XADDed -> HTTP reply".
- **preauth vs purchase**: XADD -> ``transaction_completed`` (the measurement
  of ``bench_overhead.py``: ``LaneDriver``) for ``purchase``,
  ``preauth_open`` followed by ``preauth_complete`` of the preauth it opened,
  and ``zip_purchase``, interleaved round by round on the same lane, so the
  machine's drift touches each alike.

``--warmup`` more of each run first, not counted. Run from the repository root::

    .venv/bin/python bench/bench_pat.py [--quick] [--requests 200] [--transactions 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from _common import (
    Rig,
    cpu_meter,
    last_event_id,
    loadavg,
    machine_facts,
    now_iso,
    percentile,
    raise_nofile,
    say,
    summary_ms,
    table,
    write_result,
)
from _common import run as run_main
from bench_overhead import LaneDriver, _groups, _per_purchase, purchase_body

from multipair.logs import configure_logging

NAME = "pat"
AMOUNT_CENTS = 1000  # .00: approved at once by the simulator (purchases, preauths, Zip, cards)
TABLE_ID = "12"
OPERATOR_ID = "7"
HTTP_TIMEOUT_S = 30.0
"""The control API's ``timeout``: how long the simulated terminal waits for the POS."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=200, help="bill requests, and card bill payments"
    )
    parser.add_argument(
        "--transactions",
        type=int,
        default=200,
        help="purchases, preauth open+complete pairs, and Zip purchases",
    )
    parser.add_argument("--warmup", type=int, default=10, help="uncounted of each")
    parser.add_argument("--quick", action="store_true", help="20 of each, 3 warm-up")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.transactions, args.warmup = 20, 20, 3
    return args


def summary(samples_ns: list[int]) -> dict[str, Any]:
    """``summary_ms`` with p90 too (count, min, p50, p90, p95, p99, max, mean)."""
    out = summary_ms(samples_ns)
    if out["count"]:
        values = sorted(v / 1e6 for v in samples_ns)
        out = {**out, "p90": round(percentile(values, 90), 3)}
        order = ("count", "min", "p50", "p90", "p95", "p99", "max", "mean")
        out = {k: out[k] for k in order}
    return out


# ---------------------------------------------------------------------------
# The POS: answers the lane's pay-at-table events from a dict of bills


@dataclass
class Bill:
    bill_id: str
    total_cents: int
    outstanding_cents: int


@dataclass
class Answered:
    event: str
    request_id: str
    read_ns: int
    """When the POS read the event (perf_counter_ns)."""
    answered_ns: int
    """When its ``bill_details`` XADD returned."""


@dataclass
class Waiter:
    """A POS backend for one lane, as a real one would answer: bill details from ``bills``
    (table_id -> Bill), a reported payment booked against its bill (not a duplicate)."""

    rig: Rig
    iid: str
    url: str
    bills: dict[str, Bill]
    budget: int
    """The total of a bill opened on the fly."""
    answered: list[Answered] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.reader = aioredis.Redis.from_url(self.url, client_name="bench-pos-reader")
        self.writer = aioredis.Redis.from_url(self.url, client_name="bench-pos")
        self.seq = 0
        self.booked = 0
        self.stopping = False

    async def start(self) -> None:
        stream = self.rig.keys.events(self.iid)
        self.task = asyncio.create_task(
            self._read(stream, await last_event_id(self.reader, stream))
        )

    def _bill(self, table_id: str) -> Bill:
        """The table's bill; every table has one, opened when first asked about."""
        bill = self.bills.get(table_id)
        if bill is None:
            bill = self.bills[table_id] = Bill(f"bill-{table_id}", self.budget, self.budget)
        return bill

    def _bill_answer(self, request_id: str, table_id: str) -> dict[str, Any]:
        bill = self._bill(table_id)
        return {
            "type": "bill_details",
            "request_id": request_id,
            "bill_id": bill.bill_id,
            "table_id": table_id,
            "total_cents": bill.total_cents,
            "outstanding_cents": bill.outstanding_cents,
        }

    async def _read(self, stream: str, last: str) -> None:
        commands = self.rig.keys.commands(self.iid)
        while not self.stopping:
            reply: Any = await self.reader.xread({stream: last}, count=100, block=1000)
            stamp = time.perf_counter_ns()
            for entry_id, fields in reply[0][1] if reply else []:
                last = entry_id
                event = orjson.loads(fields[b"body"])
                kind = event["type"]
                if kind == "bill_payment_reported":
                    bill = self._bill(event["table_id"])
                    if not event["duplicate"]:
                        bill.outstanding_cents -= event["amount_cents"]
                        self.booked += 1
                elif kind == "command_rejected":
                    self.errors.append(f"{event.get('reason')}: {event.get('detail')}")
                    continue
                elif kind != "bill_requested":
                    continue
                self.seq += 1
                body = {
                    "command_id": f"pos-{self.seq}",
                    **self._bill_answer(event["request_id"], event["table_id"]),
                }
                await self.writer.xadd(commands, {"v": "1", "body": orjson.dumps(body)})
                self.answered.append(
                    Answered(kind, event["request_id"], stamp, time.perf_counter_ns())
                )

    async def close(self) -> None:
        """Stopped between two reads, as ``LaneDriver.close`` (a cancelled read can hang)."""
        if self.task is not None:
            self.stopping = True
            await asyncio.wait([self.task], timeout=5)
            if not self.task.done():
                self.task.cancel()
            await asyncio.wait([self.task], timeout=5)
        await self.reader.aclose()
        await self.writer.aclose()


async def set_table_config(rig: Rig, iid: str, control_url: str, http: Any) -> dict[str, Any]:
    """Pay at table on (a ``set_table_config`` command); the config the terminal then holds."""
    stream = rig.keys.events(iid)
    last = await last_event_id(rig.redis, stream)
    body = {
        "command_id": "pat-config",
        "type": "set_table_config",
        "enabled": True,
        "tipping_enabled": True,
        "operator_ids": [OPERATOR_ID],
    }
    await rig.redis.xadd(rig.keys.commands(iid), {"v": "1", "body": orjson.dumps(body)})
    deadline = time.monotonic() + 30
    while True:
        reply: Any = await rig.redis.xread({stream: last}, count=100, block=1000)
        events = [(i, orjson.loads(f[b"body"])) for i, f in (reply[0][1] if reply else [])]
        for entry_id, event in events:
            last = entry_id
            if event.get("command_id") == "pat-config" and event["type"] == "command_rejected":
                raise RuntimeError(f"set_table_config refused: {event}")
            if event.get("command_id") == "pat-config" and event["type"] == "command_accepted":
                deadline = 0.0
        if deadline == 0.0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("set_table_config: no command_accepted in 30 s")
    for _ in range(600):  # the push reaches the terminal just after
        async with http.get(control_url) as response:
            config = (await response.json()).get("table_config")
        if config and config.get("pay_at_table_enabled"):
            return dict(config)
        await asyncio.sleep(0.05)
    raise RuntimeError("the terminal never got the table config")


PAT_KINDS = {
    "bill": "bill request",
    "pay-new": "card bill payment, a new bill each",
    "pay": "card bill payment, all on one bill",
}


def _pat_body(kind: str, i: int) -> tuple[str, dict[str, Any]]:
    """The control route and body of request ``i`` of ``kind`` (a key of PAT_KINDS)."""
    if kind == "bill":
        return "bill", {"table_id": TABLE_ID, "operator_id": OPERATOR_ID}
    table_id = TABLE_ID if kind == "pay" else f"n{i}"
    return "pay", {
        "bill_id": f"bill-{table_id}",
        "table_id": table_id,
        "operator_id": OPERATOR_ID,
        "payment_type": "card",
        "amount_cents": AMOUNT_CENTS,
    }


async def pat_phase(
    kind: str, http: Any, control_url: str, waiter: Waiter, total: int, warmup: int
) -> dict[str, Any]:
    """``warmup`` + ``total`` control calls of one kind, one after another."""
    round_trip: list[int] = []
    to_event: list[int] = []
    from_answer: list[int] = []
    reply_bytes: list[int] = []
    failed: list[str] = []
    booked_before = waiter.booked
    for i in range(warmup + total):
        path, body = _pat_body(kind, i)
        body["timeout"] = HTTP_TIMEOUT_S
        route = f"{control_url}/pat/{path}"
        mark = len(waiter.answered)
        t0 = time.perf_counter_ns()
        async with http.post(route, json=body) as response:
            raw = await response.read()
            status = response.status
        t1 = time.perf_counter_ns()
        answer = orjson.loads(raw)
        data = ((answer.get("reply") or {}).get("data")) or {}
        if status != 200 or not data.get("success"):
            failed.append(f"{status}: {str(answer)[:200]}")
            continue
        mine = waiter.answered[mark:]
        if i < warmup:
            continue
        round_trip.append(t1 - t0)
        reply_bytes.append(len(raw))
        if len(mine) == 1:
            to_event.append(mine[0].read_ns - t0)
            from_answer.append(t1 - mine[0].answered_ns)
    fifth = max(len(round_trip) // 5, 1)
    return {
        "kind": PAT_KINDS[kind],
        "route": f"POST /terminals/<serial>/pat/{_pat_body(kind, 0)[0]}",
        "requests": total,
        "warmup": warmup,
        "failed": len(failed),
        "first_failures": failed[:3],
        "payments_booked_by_pos": waiter.booked - booked_before,
        "round_trip_ms": summary(round_trip),
        "round_trip_p50_ms_first_fifth": summary(round_trip[:fifth]).get("p50"),
        "round_trip_p50_ms_last_fifth": summary(round_trip[-fifth:]).get("p50"),
        "ask_to_event_read_ms": summary(to_event),
        "answer_xadded_to_http_reply_ms": summary(from_answer),
        "http_reply_bytes": {
            "min": min(reply_bytes, default=0),
            "max": max(reply_bytes, default=0),
        },
    }


# ---------------------------------------------------------------------------
# Preauth, Zip and purchase through the lane


async def transactions_phase(driver: LaneDriver, total: int, warmup: int) -> dict[str, Any]:
    """Round by round: a purchase, a preauth opened then completed, a Zip purchase."""
    samples: dict[str, list[int]] = {
        "purchase": [],
        "preauth_open": [],
        "preauth_complete": [],
        "preauth_open_plus_complete": [],
        "zip_purchase": [],
    }
    failed: dict[str, int] = dict.fromkeys(samples, 0)
    for i in range(warmup + total):
        counted = i >= warmup
        done = await driver.transact(purchase_body(f"pu-{i}"))
        failed["purchase"] += done.event.get("result") != "success"
        if counted:
            samples["purchase"].append(done.completed_ns)
        opened = await driver.transact(
            {
                "command_id": f"po-{i}",
                "type": "preauth_open",
                "pos_ref_id": f"po-{i}",
                "amount_cents": AMOUNT_CENTS,
            }
        )
        preauth_id = opened.event.get("preauth_id")
        if opened.event.get("result") != "success" or not preauth_id:
            failed["preauth_open"] += 1
            failed["preauth_open_plus_complete"] += 1
        else:
            completed = await driver.transact(
                {
                    "command_id": f"pc-{i}",
                    "type": "preauth_complete",
                    "pos_ref_id": f"pc-{i}",
                    "preauth_id": preauth_id,
                    "amount_cents": AMOUNT_CENTS,
                }
            )
            ok = completed.event.get("result") == "success"
            failed["preauth_complete"] += not ok
            failed["preauth_open_plus_complete"] += not ok
            if counted:
                samples["preauth_open"].append(opened.completed_ns)
                samples["preauth_complete"].append(completed.completed_ns)
                samples["preauth_open_plus_complete"].append(
                    opened.completed_ns + completed.completed_ns
                )
        zipped = await driver.transact(
            {
                "command_id": f"zp-{i}",
                "type": "zip_purchase",
                "pos_ref_id": f"zp-{i}",
                "amount_cents": AMOUNT_CENTS,
                "store_code": "bench-store",
            }
        )
        failed["zip_purchase"] += zipped.event.get("result") != "success"
        if counted:
            samples["zip_purchase"].append(zipped.completed_ns)
    base = summary(samples["purchase"])
    out: dict[str, Any] = {}
    for name, values in samples.items():
        s = summary(values)
        entry: dict[str, Any] = {"failed": failed[name], "completed_ms": s}
        if name != "purchase" and s["count"] and base["count"]:
            entry["over_purchase"] = {q: round(s[q] / base[q], 2) for q in ("p50", "p99")}
            entry["added_ms"] = {q: round(s[q] - base[q], 3) for q in ("p50", "p99")}
        out[name] = entry
    return out


# ---------------------------------------------------------------------------


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
            "pat_requests_per_kind": args.requests,
            "transactions_per_kind": args.transactions,
            "warmup_per_kind": args.warmup,
            "amount_cents": AMOUNT_CENTS,
            "card_delay_s": 0,
            "lanes": 1,
            "simulator": "multipair simulate (own process), state in /dev/shm, log level warning",
            "redis_persistence": "off (no AOF, no RDB)",
            "pat_timing": "HTTP control call to its reply read, the control call included",
            "transaction_timing": "return of XADD to reading transaction_completed "
            "(bench_overhead.LaneDriver)",
        },
        "loadavg_before": loadavg(),
        "phases": [],
    }
    async with Rig(terminals=1, lanes=1, keep=args.keep) as rig:
        terminal = rig.manifest["terminals"][0]
        control_url = terminal["control_url"]
        iid = rig.instance_ids[0]
        rig.start_supervisor(capacity=1)
        template = await rig.template_pid()
        _, stopped = await rig.wait_connected(120, max_kills=1)
        if stopped is not None:
            raise RuntimeError(f"the lane did not connect: {stopped}")
        await asyncio.sleep(1)
        url = rig.redis_server.url
        budget = (args.requests + args.warmup + 1) * AMOUNT_CENTS * 10
        waiter = Waiter(rig, iid, url, {}, budget)
        driver = LaneDriver(url, rig, iid)
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S + 10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await waiter.start()
            await driver.start()
            try:
                say("pay at table: set_table_config")
                payload["table_config"] = await set_table_config(rig, iid, control_url, http)
                for kind in PAT_KINDS:
                    say(f"pay at table: {args.requests} x {PAT_KINDS[kind]}")
                    with cpu_meter(_groups(rig, template)) as cpu:
                        phase = await pat_phase(
                            kind, http, control_url, waiter, args.requests, args.warmup
                        )
                    phase["cpu_s"] = cpu
                    phase["cpu_ms_per_request"] = _per_purchase(cpu, args.requests + args.warmup)
                    payload["phases"].append(phase)
                payload["pos_rejections"] = waiter.errors
                say(
                    f"transactions: {args.transactions} rounds of purchase, "
                    "preauth open + complete, zip purchase"
                )
                with cpu_meter(_groups(rig, template)) as cpu:
                    tx = await transactions_phase(driver, args.transactions, args.warmup)
                payload["transactions"] = tx
                payload["transactions_cpu_s"] = cpu
            finally:
                await driver.close()
                await waiter.close()
        payload["supervisor_log"] = rig.sup_log.summary()
    payload["finished_at"] = now_iso()
    path = write_result(NAME, payload)

    print("Pay at table: control call -> terminal asks -> event -> POS answers -> reply, ms")
    print("(the HTTP control call to the simulator is included)")
    rows = []
    for p in payload["phases"]:
        for label, key in (
            ("round trip", "round_trip_ms"),
            ("  ask -> event read by POS", "ask_to_event_read_ms"),
            ("  answer XADDed -> reply", "answer_xadded_to_http_reply_ms"),
        ):
            s = p[key]
            rows.append(
                [
                    f"{p['kind']}: {label}",
                    s["count"],
                    s.get("p50"),
                    s.get("p90"),
                    s.get("p99"),
                    s.get("max"),
                    p["failed"] if key == "round_trip_ms" else "",
                ]
            )
    print(table(["what", "n", "p50", "p90", "p99", "max", "failed"], rows))
    print()
    print("XADD -> transaction_completed on the same lane, ms")
    rows = []
    for name, entry in payload["transactions"].items():
        s = entry["completed_ms"]
        ratio = entry.get("over_purchase", {})
        rows.append(
            [
                name,
                s["count"],
                s.get("p50"),
                s.get("p99"),
                ratio.get("p50"),
                ratio.get("p99"),
                entry["failed"],
            ]
        )
    print(table(["command", "n", "p50", "p99", "p50/purchase", "p99/purchase", "failed"], rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main()))
