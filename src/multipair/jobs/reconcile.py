"""Our own transaction records against the terminals' settlements of one business day.

:func:`reconcile_day` counts every settled lane's records of its settlement
period again (outcomes recorded late, a recovered ``unknown``, are then
included), brings each entry's ``ours`` and ``mismatch`` up to date, and
lists the lanes that had transactions that day but no settlement. The
result is kept in the day's report too (field ``reconcile``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any

from multipair.broker_schema import format_time, parse_time
from multipair.client import AsyncClient
from multipair.jobs.fleet import our_records
from multipair.jobs.report import ReportStore
from multipair.jobs.settlement import (
    LaneState,
    OurTotals,
    business_day,
    day_start,
    mismatch,
    our_totals,
)
from multipair.store.transactions import TxStore

__all__ = ["reconcile_day"]


async def reconcile_day(client: AsyncClient, day_text: str) -> dict[str, Any]:
    """Reconcile ``day_text`` (``YYYY-MM-DD``); the result (JSON-ready), also stored."""
    now = _dt.datetime.now(_dt.UTC)
    day = business_day(day_text, now)
    store = ReportStore(client.redis, client.keys.prefix)
    txs = TxStore(client.redis, client.keys)
    entries = await store.lanes(day)
    mismatches: list[dict[str, Any]] = []
    unsettled: list[dict[str, Any]] = []
    checked = 0
    for iid, entry in sorted(entries.items()):
        if entry.state is not LaneState.SETTLED or entry.terminal is None:
            continue
        checked += 1
        start, end = _window(entry.ours, day, entry.terminal.settled_at)
        records = await our_records(txs, client.redis, client.keys, iid, start, end)
        ours = our_totals(records, window_start=start, window_end=end)
        flagged = mismatch(entry.terminal, ours)
        if (ours, flagged) != (entry.ours, entry.mismatch):
            # Derived fields of a final entry: only reconcile rewrites them.
            await store.put(day, dataclasses.replace(entry, ours=ours, mismatch=flagged))
        if flagged:
            mismatches.append(
                {
                    "instance_id": iid,
                    "pos_id": entry.pos_id,
                    "serial_number": entry.serial_number,
                    "tenant_code": entry.tenant_code,
                    "terminal": {
                        "count": entry.terminal.count,
                        "value_cents": entry.terminal.value_cents,
                    },
                    "ours": ours.to_json(),
                    "difference": {
                        "count": entry.terminal.count - ours.count,
                        "value_cents": entry.terminal.value_cents - ours.value_cents,
                    },
                }
            )
    start = day_start(day)
    end = min(now, start + _dt.timedelta(days=1))
    for profile in await client.list_lanes():
        stored = entries.get(profile.instance_id)
        if stored is not None and stored.state is LaneState.SETTLED:
            continue
        records = await our_records(txs, client.redis, client.keys, profile.instance_id, start, end)
        ours = our_totals(records, window_start=start, window_end=end)
        if stored is None and not (ours.count or ours.open or ours.unknown):
            continue
        unsettled.append(
            {
                "instance_id": profile.instance_id,
                "pos_id": profile.pos_id,
                "serial_number": profile.serial_number,
                "tenant_code": profile.tenant_code,
                "state": None if stored is None else stored.state.value,
                "reason": None if stored is None or stored.reason is None else stored.reason.value,
                "ours": ours.to_json(),
            }
        )
    result = {
        "business_day": day,
        "checked_at": format_time(now),
        "settled_lanes": checked,
        "mismatches": mismatches,
        "unsettled": unsettled,
        "ok": not mismatches and not unsettled,
    }
    await store.put_reconcile(day, result)
    return result


def _window(
    ours: OurTotals | None, day: str, settled_at: str | None
) -> tuple[_dt.datetime, _dt.datetime]:
    """The settlement period a settled entry was counted over (its day, when not recorded)."""
    start = day_start(day)
    end = start + _dt.timedelta(days=1)
    if ours is not None and ours.window_start and ours.window_end:
        return parse_time(ours.window_start), parse_time(ours.window_end)
    if settled_at:
        end = parse_time(settled_at)
    return start, end
