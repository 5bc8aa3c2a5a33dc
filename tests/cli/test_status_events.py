"""``multipair status`` and ``multipair events``: tables, JSON lines, ``--watch``/``--follow``.

All tests share one paired lane (tests/cli/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

import pytest

from tests.cli.conftest import SharedLane
from tests.cli.helpers import Cli

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _purchase(lane: SharedLane, ref: str) -> None:
    result = await lane.cli.run(
        "tx", "purchase", lane.iid, "--amount", "12.50", "--pos-ref-id", ref
    )
    assert 0 == result.code, result


def _order(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-"))


# ---------------------------------------------------------------------- status


async def test_status_json_has_every_lane_with_its_state_and_last_transaction(
    shared: SharedLane,
) -> None:
    await _purchase(shared, "st-1")
    result = await shared.cli.run("status")
    assert 0 == result.code, result
    doc = result.json()
    assert ["at", "lanes", "summary"] == list(doc)
    # No supervisor in this test: no host, and nothing waits in the lane's stream.
    assert {"by_status": {"paired_connected": 1}, "backlog": 0, "hosts": []} == doc["summary"]
    (row,) = doc["lanes"]
    assert shared.rig.process.proc is not None
    assert {
        "instance_id": shared.iid,
        "pos_id": "POS1",
        "serial_number": "SIM-0001",
        "enabled": True,
        "running": True,
        "status": "paired_connected",
        "flow": "idle",
        "host": "test-host",
        "pid": shared.rig.process.proc.pid,
        "owner": None,  # no supervisor holds a lease in this test
        "restarts": 0,
        "crash_loop": False,
        "last_exit": None,  # no supervisor runs this lane
        "last_exit_cause": None,
        "last_error": None,
        "backlog": 0,
        "last_pos_ref_id": "st-1",
        "last_result": "success",
    } == {k: v for k, v in row.items() if k not in ("heartbeat_at", "started_at", "uptime_s")}
    assert row["heartbeat_at"].endswith("Z")


async def test_status_table_shows_the_short_id_and_the_key_columns(shared: SharedLane) -> None:
    await _purchase(shared, "st-2")
    result = await shared.cli.run("status", json=False)
    assert 0 == result.code, result
    header, row, blank, summary = result.out.splitlines()
    assert ("", "1 lanes: 1 paired_connected; backlog 0; hosts: none") == (blank, summary)
    assert [
        "ID",
        "POS",
        "SERIAL",
        "STATUS",
        "FLOW",
        "HOST",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST",
        "TX",
        "RESULT",
    ] == header.split()
    assert shared.rig.process.proc is not None
    pid = str(shared.rig.process.proc.pid)
    cells = row.split()
    assert re.fullmatch(r"-|\d+s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh", cells[7]), cells[7]  # uptime
    assert [
        shared.iid[:8],
        "POS1",
        "SIM-0001",
        "paired_connected",
        "idle",
        "test-host",
        pid,
        "0",
        "st-2",
        "success",
    ] == cells[:7] + cells[8:]


async def test_status_of_no_lanes(redis_url: str) -> None:
    empty = Cli(redis_url, "t-empty-status")
    machine, human = await asyncio.gather(empty.run("status"), empty.run("status", json=False))
    assert (0, 0) == (machine.code, human.code)
    assert [] == machine.json()["lanes"]
    assert "No lanes. Add one with `multipair lane add`.\n" == human.out


async def test_status_watch_redraws_until_ctrl_c_then_exits_0(shared: SharedLane) -> None:
    machine = await shared.cli.start("status", "--watch", "--interval", "0.1")
    try:
        first, second = json.loads(await machine.line()), json.loads(await machine.line())
        await machine.interrupt()
        done = await machine.finish()
    finally:
        await machine.kill()
    assert 0 == done.code, done
    assert [[shared.iid]] * 2 == [[r["instance_id"] for r in d["lanes"]] for d in (first, second)]
    assert first["at"] < second["at"]

    human = await shared.cli.start("status", "--watch", "--interval", "0.1", json=False)
    try:
        for _ in range(2):
            await human.until(lambda text: text.endswith("UTC  (1 lanes)"))
        await human.interrupt()
        done = await human.finish()
    finally:
        await human.kill()
    assert 0 == done.code, done
    assert "\x1b[" not in done.out  # not a terminal: plain repeated tables, no screen clearing
    assert "" == done.err


# ---------------------------------------------------------------------- events


async def test_events_json_lines_carry_the_entry_id_and_the_event(shared: SharedLane) -> None:
    await _purchase(shared, "ev-1")
    result = await shared.cli.run("events", shared.iid)
    assert 0 == result.code, result
    events = result.json_lines()
    assert "lane_started" == events[0]["type"]
    ids = [e["entry_id"] for e in events]
    assert sorted(ids, key=_order) == ids
    mine = [e["type"] for e in events if e.get("pos_ref_id") == "ev-1"]
    assert ["command_accepted", "transaction_completed"] == [
        t for t in mine if t in ("command_accepted", "transaction_completed")
    ]
    assert all(e["instance_id"] == shared.iid for e in events)

    since = next(e["entry_id"] for e in events if e.get("pos_ref_id") == "ev-1")
    later = await shared.cli.run("events", shared.iid, "--since", since, "--count", "1")
    assert 0 == later.code, later
    (after,) = later.json_lines()
    assert ids[ids.index(since) + 1] == after["entry_id"]


async def test_events_count_alone_gives_the_newest_events(shared: SharedLane) -> None:
    await _purchase(shared, "ev-new")
    every = (await shared.cli.run("events", shared.iid)).json_lines()
    newest = await shared.cli.run("events", shared.iid, "--count", "2")
    assert 0 == newest.code, newest
    assert [e["entry_id"] for e in every[-2:]] == [e["entry_id"] for e in newest.json_lines()]


async def test_a_purchase_read_by_head_keeps_its_exit_code(shared: SharedLane) -> None:
    """`tx purchase ... | head -1`: the reader leaves after one line; the purchase was still
    approved, so the exit code is 0, and no "Broken pipe" is printed."""
    argv = shared.cli.argv(
        ("tx", "purchase", shared.iid, "--amount", "12.50", "--pos-ref-id", "pipe-1"), json=False
    )
    read, write = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=write,
        stderr=asyncio.subprocess.PIPE,
        env=shared.cli.env,
    )
    os.close(write)
    with os.fdopen(read, "rb") as out:
        first = out.readline()  # then the reader goes away, like `head -1`
    assert first.startswith(b"purchase $12.50 on lane"), first
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (0, b"") == (proc.returncode, err)


async def test_events_for_people_are_one_line_each(shared: SharedLane) -> None:
    await _purchase(shared, "ev-2")
    result = await shared.cli.run("events", shared.iid, json=False)
    assert 0 == result.code, result
    done = [line for line in result.out.splitlines() if "pos_ref_id ev-2" in line]
    assert 2 <= len(done), result.out
    assert (
        "transaction_completed  success  purchase  $12.50  pos_ref_id ev-2  000 APPROVED"
        in (done[-1])
    )


async def test_events_follow_prints_new_events_until_ctrl_c(shared: SharedLane) -> None:
    # Follow from the newest entry now, so the purchase below cannot race the start-up.
    reply: Any = await shared.rig.redis.xrevrange(shared.rig.keys.events(shared.iid), count=1)
    newest = reply[0][0].decode()
    follow = await shared.cli.start("events", shared.iid, "--follow", "--since", newest)
    try:
        await _purchase(shared, "ev-3")
        line = await follow.until(lambda text: json.loads(text)["type"] == "transaction_completed")
        await follow.interrupt()
        done = await follow.finish()
    finally:
        await follow.kill()
    assert 0 == done.code, done
    assert "ev-3" == json.loads(line)["pos_ref_id"]
    assert _order(newest) < _order(json.loads(follow.lines[0])["entry_id"])


async def test_events_refuses_a_bad_since(shared: SharedLane) -> None:
    result = await shared.cli.run("events", shared.iid, "--since", "yesterday")
    assert 2 == result.code, result
    assert "is not a stream entry id" in result.err
