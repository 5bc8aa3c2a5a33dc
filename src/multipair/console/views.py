"""What the console shows, as JSON for its page: lanes, events, transactions, hosts (pure).

Built on the CLI's own views (:mod:`multipair.cli._views`, the ``status``
and ``events`` lines), so a lane reads the same in ``multipair status`` and
in the browser. Nothing here holds a secret: a profile has none (the sealed
keys stay in Redis), and only its fields are shown.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from multipair import broker_schema as bs
from multipair.cli._hosts import host_fields
from multipair.cli._status import describe_event
from multipair.cli._views import info_json, is_running, profile_json
from multipair.client import LaneInfo
from multipair.store.transactions import TxRecord
from multipair.supervisor.hosts import HostEntry

__all__ = ["event_json", "host_json", "lane_json", "lane_row", "shown_status", "tx_json"]


def shown_status(info: LaneInfo, now: _dt.datetime) -> str:
    """One word for the status column: ``multipair status``'s, with two more.

    ``crash_loop`` first; then ``stopped`` (disabled) or ``down`` (no host
    runs it); ``restarting`` while its host holds it with no process;
    ``starting`` while its process has not beaten yet (the status in the
    hash is then its predecessor's); else the lane's own status.
    """
    if info.crash_loop:
        return "crash_loop"
    if not is_running(info, now):
        return "stopped" if not info.profile.enabled else "down"
    if info.pid is None:
        return "restarting"
    fresh = info.started_at is not None and (
        info.heartbeat_at is None or info.heartbeat_at < info.started_at
    )
    return "starting" if fresh or not info.status else info.status


def lane_row(info: LaneInfo, now: _dt.datetime, last_exit: str | None) -> dict[str, Any]:
    """One row of the lanes table: ``status --json``'s lane, and the word to show."""
    return {**info_json(info, now, last_exit=last_exit), "shown": shown_status(info, now)}


def lane_json(info: LaneInfo, now: _dt.datetime, last_exit: str | None) -> dict[str, Any]:
    """A lane's page: its row and its profile (no secrets in it)."""
    return {"row": lane_row(info, now, last_exit), "profile": profile_json(info.profile)}


def event_json(instance_id: str, entry_id: str, event: bs.Event) -> dict[str, Any]:
    """One event of a lane: its line as ``multipair events`` prints it, and its body."""
    return {
        "instance_id": instance_id,
        "entry_id": entry_id,
        "type": event.type,
        "at": bs.format_time(event.at),
        "line": describe_event(event),
        "body": bs.event_body(event),
    }


def tx_json(record: TxRecord) -> dict[str, Any]:
    """A transaction record, without its outcome body (receipts stay on the event)."""
    return {
        "pos_ref_id": record.pos_ref_id,
        "command_id": record.command_id,
        "tx_type": record.tx_type,
        "amount_cents": record.amount_cents,
        "state": str(record.state),
        "result": None if record.result is None else str(record.result),
        "created_at": bs.format_time(record.created_at),
        "updated_at": None if record.updated_at is None else bs.format_time(record.updated_at),
    }


def host_json(entry: HostEntry, lanes: Mapping[str, list[str]]) -> dict[str, Any]:
    """One supervisor: its heartbeat, state (``live``, ``draining``, ``stale``...) and lanes."""
    return {**host_fields(entry), "lane_ids": sorted(lanes.get(entry.host_id, []))}
