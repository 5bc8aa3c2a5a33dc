"""Lanes move between live hosts only between transactions: a new host gets its share, and
``multipair host drain`` empties a host under load (issue 7)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import orjson

from tests.failover.helpers import (
    APPROVE,
    SIGNATURE,
    SLOW_CARD,
    holders,
    log_events,
    opened,
    replaced,
    running_anew,
    terminal_connections,
    wait_hosts_live,
    wait_spread,
)
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane
from tests.worker.helpers import Body

PACE_S = 0.4
"""The load's pause between two customers at one terminal."""

# The `multipair hosts` / `host ...` commands as a process of their own, until the main
# CLI (multipair.cli) registers them: the same parser pieces it uses.
_CLI = """
import sys
from multipair.cli._base import Parser, add_global_options
from multipair.cli._hosts import add_hosts_parser
parser = Parser(prog="multipair")
add_global_options(parser, top=True)
add_hosts_parser(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


async def cli(fleet: Fleet, *argv: str) -> tuple[int, str, str]:
    """Run ``multipair <argv>`` (hosts commands); exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLI,
        *argv,
        env=fleet.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_new_host_gets_its_share_and_a_lane_in_a_transaction_stays_put(
    fleet: Fleet,
) -> None:
    a = fleet.supervisor("host-a", capacity=10)
    await a.start()
    lanes = [await fleet.add_lane(i) for i in range(6)]
    await wait_spread(lanes, {"host-a": 6})
    busy = lanes[0]
    busy_pid = (await busy.state())["pid"]
    held = await busy.send({"type": "purchase", "pos_ref_id": "held-1", "amount_cents": SIGNATURE})
    await busy.next_event("signature_required", pos_ref_id="held-1")
    marks = {lane.instance_id: await lane.mark() for lane in lanes}

    b = fleet.supervisor("host-b", capacity=10)
    with terminal_connections() as connections:
        await b.start()
        await wait_spread(lanes, {"host-a": 3, "host-b": 3})
        for lane in lanes[1:]:
            if (await lane.lease()).host_id == "host-b":  # type: ignore[union-attr]
                await running_anew(lane, after=marks[lane.instance_id], previous=0)
    assert ([], 3) == (replaced(connections), len(opened(connections)))

    # The lane waiting for a signature was never touched: same process, same host.
    state = await busy.state()
    assert ("host-a", busy_pid) == (state["host"], state["pid"])
    await busy.send({"type": "signature_accept", "pos_ref_id": "held-1"})
    done = await busy.answer(held, 30)
    assert ("success", False) == (done["result"], done["recovered"])
    moved = [lane for lane in lanes if (await lane.lease()).host_id == "host-b"]  # type: ignore[union-attr]
    for lane in moved:
        await lane.events.poll(0)
        stopped = lane.events.of_type("lane_stopped")
        assert ["rebalance"] == [e["reason"] for e in stopped if e["pid"] != busy_pid]
        assert "success" == (await lane.purchase(f"{lane.serial}-m", APPROVE, 30))["result"]
    for lane in lanes:
        assert [] == [
            e for e in lane.events.seen[marks[lane.instance_id] :] if e["type"] == "lane_crashed"
        ]
    assert [1] * 6 == [t.stats.max_concurrent_connections for t in fleet.sim.terminals[:6]]


async def test_drain_under_load_moves_every_lane_between_transactions(fleet: Fleet) -> None:
    a, b = fleet.supervisor("host-a", capacity=10), fleet.supervisor("host-b", capacity=10)
    await a.start()
    await b.start()
    await wait_hosts_live(fleet, a, b)
    lanes = [await fleet.add_lane(i) for i in range(6)]
    await wait_spread(lanes, {"host-a": 3, "host-b": 3})

    stop = asyncio.Event()

    async def load(lane: Lane) -> list[Body]:
        done: list[Body] = []
        while not stop.is_set():
            cents = SLOW_CARD if len(done) % 2 == 0 else APPROVE
            done.append(await lane.purchase(f"{lane.serial}-{len(done)}", cents, 60))
            with contextlib.suppress(TimeoutError):  # the next customer, or the end of the load
                async with asyncio.timeout(PACE_S):
                    await stop.wait()
        return done

    shopping = [asyncio.create_task(load(lane)) for lane in lanes]
    for lane in lanes:
        await lane.wait_state(flow="transaction")

    with terminal_connections() as connections:
        code, out, err = await cli(
            fleet, "host", "drain", "host-a", "--wait", "--timeout", "90", "--json"
        )
        await wait_spread(lanes, {"host-b": 6})

        async def reconnected() -> bool:  # the three lanes host-a had, now under host-b
            return len(opened(connections)) >= 3

        await poll_until(reconnected, "host-a's lanes connected from host-b")
    assert ([], 3) == (replaced(connections), len(opened(connections)))
    assert (0, "") == (code, err.replace("Draining host host-a: 3 lane(s) to move...\n", ""))
    assert {"host_id": "host-a", "action": "drain", "lanes": 0, "lanes_down": 0} == {
        k: v for k, v in orjson.loads(out).items() if k != "request_id"
    }
    await wait_spread(lanes, {"host-b": 6})
    # Keep the load on a little on the new owner, then stop it.
    for lane in lanes:
        await lane.wait_state(flow="transaction")
    stop.set()
    results = await asyncio.gather(*shopping)

    # Not one transaction interrupted: all approved live, none recovered, each once.
    for lane, done in zip(lanes, results, strict=True):
        assert [("success", False)] * len(done) == [(d["result"], d["recovered"]) for d in done]
        completed = [e["pos_ref_id"] for e in lane.events.of_type("transaction_completed")]
        assert sorted(f"{lane.serial}-{k}" for k in range(len(done))) == sorted(completed)
    for lane, terminal in zip(lanes, fleet.sim.terminals, strict=False):
        assert [1] * len(terminal.stats.purchase_requests) == list(
            terminal.stats.purchase_requests.values()
        )
        assert 1 == terminal.stats.max_concurrent_connections
        stops = {e["reason"] for e in lane.events.of_type("lane_stopped") if e["host"] == "host-a"}
        assert stops <= {"host drain"}
        assert [] == lane.events.of_type("lane_crashed")
    handed = log_events(a, "lane handed off (drains, then its lease is released)")
    assert 3 == len(handed)

    # host-a is empty and says so; `multipair hosts` shows it.
    async def empty() -> dict[str, Any] | None:
        entry = await fleet.host_entry("host-a")
        return entry if entry is not None and entry["lanes"] == 0 else None

    entry = await poll_until(empty, "host-a's heartbeat: no lanes")
    assert (False, True) == (entry["accepting"], entry["draining"])
    code, out, _ = await cli(fleet, "hosts", "--json")
    shown = {h["host_id"]: h for h in orjson.loads(out)["hosts"]}
    assert (0, ["host-a", "host-b"]) == (code, sorted(shown))
    assert ("draining", 0, False, 10) == tuple(
        shown["host-a"][k] for k in ("state", "leases", "accepting", "capacity")
    )
    assert ("live", 6, True) == tuple(shown["host-b"][k] for k in ("state", "leases", "accepting"))
    code, table, _ = await cli(fleet, "hosts")
    assert 0 == code
    assert ["HOST", "STATE", "HEARTBEAT", "CAPACITY", "LANES", "LEASES", "ACCEPTING", "PID"] == (
        table.splitlines()[0].split()
    )

    # `host accept` ends the drain: idle lanes come back until the split is even again.
    code, _, _ = await cli(fleet, "host", "accept", "host-a")
    assert 0 == code
    await wait_spread(lanes, {"host-a": 3, "host-b": 3})
    assert {"host-a": 3, "host-b": 3} == dict(await holders(lanes))


async def test_host_commands_refuse_an_unknown_host(fleet: Fleet) -> None:
    code, _, err = await cli(fleet, "host", "drain", "nobody")
    assert (
        2,
        f"multipair: error: no host 'nobody' in {fleet.keys.hosts()} (see `multipair hosts`)",
    ) == (code, err.strip())
    code, out, _ = await cli(fleet, "hosts")
    assert (0, "No hosts. Start one with `multipair supervise --host-id H`.") == (code, out.strip())
