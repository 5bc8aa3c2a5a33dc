"""Reading ``mp:hosts`` entries: what the balancer and ``multipair hosts`` see (no I/O)."""

from __future__ import annotations

import datetime as _dt

import orjson

from multipair.supervisor.decide import HostView
from multipair.supervisor.hosts import HostEntry, parse_host_entry

NOW = _dt.datetime(2025, 1, 31, 9, 30, 10, tzinfo=_dt.UTC)


def test_an_entry_is_decoded_with_its_heartbeat_age() -> None:
    raw = orjson.dumps(
        {
            "heartbeat_at": "2025-01-31T09:30:08.500Z",
            "started_at": "2025-01-31T09:00:00.000Z",
            "pid": 42,
            "lanes": 7,
            "capacity": 20,
            "accepting": False,
            "draining": True,
            "template_pid": 43,
        }
    )
    entry = parse_host_entry("host-a", raw, NOW)
    assert (
        HostEntry(
            host_id="host-a",
            heartbeat_at="2025-01-31T09:30:08.500Z",
            age_s=1.5,
            capacity=20,
            lanes=7,
            accepting=False,
            draining=True,
            pid=42,
            started_at="2025-01-31T09:00:00.000Z",
            template_pid=43,
        )
        == entry
    )
    assert HostView(host_id="host-a", capacity=20, lanes=7, accepting=False, age_s=1.5) == (
        entry.view()
    )
    assert (True, False) == (entry.live(5.0), entry.live(1.0))


def test_an_entry_of_an_older_supervisor_accepts_and_is_not_draining() -> None:
    raw = orjson.dumps({"heartbeat_at": "2025-01-31T09:30:10.000Z", "lanes": 2, "capacity": 9})
    entry = parse_host_entry("host-b", raw, NOW)
    assert (True, False, 0.0) == (entry.accepting, entry.draining, entry.age_s)


def test_a_damaged_entry_reads_as_unknown_and_never_live() -> None:
    for raw in (b"not json", b"[]", orjson.dumps({"heartbeat_at": "yesterday", "lanes": "x"})):
        entry = parse_host_entry("host-c", raw, NOW)
        assert (None, None, 0, 0, False) == (
            entry.heartbeat_at,
            entry.age_s,
            entry.lanes,
            entry.capacity,
            entry.live(5.0),
        )
        assert float("inf") == entry.view().age_s
