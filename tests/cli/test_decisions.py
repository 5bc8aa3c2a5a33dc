"""The CLI's pure decisions and views (no Redis, no processes): what ``tx status`` answers
on a busy lane, which hosts can take a drained host's lanes, what ``status`` shows."""

from __future__ import annotations

import datetime as _dt

from multipair import broker_schema as bs
from multipair.cli._hosts import room_elsewhere
from multipair.cli._status import select_lanes, status_table
from multipair.cli._tx import answer_from_record
from multipair.cli._views import lane_status
from multipair.client import LaneInfo
from multipair.store.profiles import LaneProfile
from multipair.store.transactions import TxRecord, TxState
from multipair.supervisor.hosts import HostEntry

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
NOW = _dt.datetime(2026, 1, 1, 12, tzinfo=_dt.UTC)


def test_the_busy_answer_is_decided_from_the_record_alone() -> None:
    running = TxRecord(pos_ref_id="r1", command_id="c1", tx_type="purchase", amount_cents=5)
    event = bs.TransactionCompleted(
        instance_id=LANE, at=running.created_at, result="failed", pos_ref_id="r1"
    )
    finished = TxRecord(
        pos_ref_id="r1",
        command_id="c1",
        tx_type="purchase",
        state=TxState.COMPLETED,
        result=bs.TxResult.FAILED,
        outcome=bs.event_to_json(event),
    )
    assert [("not_recorded", None), ("in_progress", None), ("found", event)] == [
        (answer.state, answer.event)
        for answer in map(answer_from_record, (None, running, finished))
    ]


def _host(
    host_id: str, *, age: float = 1.0, lanes: int = 0, capacity: int = 10, **kw: bool
) -> HostEntry:
    return HostEntry(
        host_id=host_id,
        heartbeat_at=None,
        age_s=age,
        capacity=capacity,
        lanes=lanes,
        accepting=kw.get("accepting", True),
        draining=kw.get("draining", False),
        pid=1,
        started_at=None,
        template_pid=None,
    )


def test_only_live_accepting_other_hosts_count_as_room_for_a_drain() -> None:
    assert 0 == room_elsewhere([_host("local", lanes=8)], "local")
    assert 0 == room_elsewhere(
        [
            _host("local", lanes=8),
            _host("stale", age=60.0),
            _host("draining", draining=True),
            _host("stopping", accepting=False),
            _host("full", lanes=10),
        ],
        "local",
    )
    assert 7 == room_elsewhere([_host("local", lanes=8), _host("b", lanes=3)], "local")


def _info(**fields: object) -> LaneInfo:
    profile = LaneProfile(
        instance_id=str(fields.pop("iid", LANE)),
        pos_id="POS1",
        serial_number="SIM-0001",
        device_address="ws://127.0.0.1:1",
        enabled=bool(fields.pop("enabled", True)),
    )
    return LaneInfo(profile=profile, **fields)  # type: ignore[arg-type]


def test_a_stopped_lane_shows_stopped_as_soon_as_its_process_exited() -> None:
    """Issue 14: after `lane stop` the status said paired_connecting (no pid, a running
    uptime) for ~10 s, until the last heartbeat aged: the cleared pid says it at once."""
    beat = NOW - _dt.timedelta(seconds=1)
    draining = _info(
        enabled=False, status="paired_connected", pid=42, heartbeat_at=beat, lease_host="h1"
    )
    exited = _info(enabled=False, status="paired_connecting", pid=None, heartbeat_at=beat)
    died = _info(enabled=True, status="paired_connecting", pid=None, heartbeat_at=beat)
    assert ["stopping", "stopped", "down"] == [
        lane_status(i, NOW) for i in (draining, exited, died)
    ]
    table = status_table([exited], NOW)
    assert "paired_connecting" not in table
    assert "stopped" in table.splitlines()[1]


def test_status_filters_by_host_and_by_status() -> None:
    beat = NOW - _dt.timedelta(seconds=1)
    a = _info(
        iid="aaaaaaaa-0000-4000-8000-000000000001",
        status="paired_connected",
        pid=1,
        heartbeat_at=beat,
        lease_host="h1",
    )
    b = _info(
        iid="bbbbbbbb-0000-4000-8000-000000000001",
        status="unpaired",
        pid=2,
        heartbeat_at=beat,
        lease_host="h2",
    )
    c = _info(iid="cccccccc-0000-4000-8000-000000000001", crash_loop=True, lease_host="h2")
    exits = {c.instance_id: "exit code 2"}
    assert [b, c] == select_lanes([a, b, c], exits, NOW, host="h2")
    assert [c] == select_lanes([a, b, c], exits, NOW, status="crash_loop")
    assert [b] == select_lanes([a, b, c], exits, NOW, host="h2", status="unpaired")


def test_the_status_table_fits_a_terminal_with_fixed_columns() -> None:
    beat = NOW - _dt.timedelta(seconds=1)
    short = _info(status="paired_connected", pid=7, heartbeat_at=beat, lease_host="h1")
    long = _info(
        status="paired_connected",
        pid=1234567,
        heartbeat_at=beat,
        lease_host="a-very-long-host-name",
        last_pos_ref_id="x" * 40,
    )
    for width in (80, 100, 132):
        first, second = (status_table([i], NOW, width=width) for i in (short, long))
        assert all(len(line) <= width for line in first.splitlines() + second.splitlines())
        assert first.splitlines()[0] == second.splitlines()[0]  # same columns, same places
    narrow = status_table([short], NOW, width=80).splitlines()[0].split()
    assert ["ID", "SERIAL", "STATUS", "FLOW", "HOST", "UPTIME"] == narrow
    # Off a terminal (a pipe, a file) every column is there, whole.
    assert "x" * 40 in status_table([long], NOW)
