"""``multipair settle ...``: the end-of-day settlement of the fleet, now, and its report.

- ``settle --all [--tenant T] [--host H] [--tag X] [--concurrency N] [--day DAY]
  [--retries N] [--retry-delay S] [--busy-wait S] [--retry-unknown]
  [--via-rq [--timeout S]]`` settles every enabled, paired
  lane (or those the filters pick) for the business day (default: today,
  local time): here, or by enqueueing :func:`multipair.jobs.settle_fleet` on
  the RQ queue and following it. A progress line per lane, then a table and
  the fleet totals. Safe to run again: lanes already settled for the day are
  not settled twice (``multipair.jobs.settlement``).
- ``settle report DAY [--csv]``: the day's report as a table, CSV, or JSON.
- ``settle reconcile DAY``: our transaction records against the terminals'
  settlements of the day again; the differences.

Exit codes (of ``--all`` and ``reconcile``): 0 every lane settled and its
totals match our records; 1 a lane failed (offline, busy, refused, declined)
or its totals differ; 3 a lane's settlement is unknown or still unanswered
(check the terminal; running again reads a late answer, never settles twice).
One settlement per lane is ``multipair tx settle ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as _dt
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Parser,
    Stake,
    Subparsers,
    add_global_options,
    client_command,
    render_table,
    seconds,
    short_id,
)
from multipair.cli.amounts import format_cents
from multipair.client import AsyncClient
from multipair.exceptions import CommandError
from multipair.jobs.fleet import FleetOptions, FleetSettlement
from multipair.jobs.reconcile import reconcile_day
from multipair.jobs.report import ReportStore
from multipair.jobs.settlement import LaneRecord, LaneState, Why, business_day, summarize
from multipair.store.profiles import LaneProfile

__all__ = ["add_settle_parser"]

_QUIET_NOTES: Final = ("sending attempt", "resolving attempt")
"""Steps not worth a line of their own (every lane has them)."""
_POLL_S: Final = 0.5
"""How often ``--via-rq`` reads the report and the job's status (nothing to block on)."""

CSV_COLUMNS: Final = (
    "instance_id",
    "pos_id",
    "serial_number",
    "tenant_code",
    "state",
    "attempt",
    "terminal_count",
    "terminal_value_cents",
    "our_count",
    "our_value_cents",
    "mismatch",
    "reason",
    "detail",
    "settled_at",
    "schemes",
)


def _day(text: str) -> str:
    try:
        return business_day(text, _dt.datetime.now(_dt.UTC))
    except CommandError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An ``argparse`` type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: give {low} to {high}")
        return value

    return parse


_count = _whole(1, 1000)
_retries = _whole(0, 100)


def add_settle_parser(subparsers: Subparsers) -> None:
    """Register ``multipair settle`` (``--all``, ``report``, ``reconcile``)."""
    settle = subparsers.add_parser(
        "settle",
        help="end-of-day settlement of every lane, its report and reconciliation",
        description=(
            "settle --all settles every enabled, paired lane for the business day (today, local "
            "time, unless --day); safe to run again: no lane is settled twice for a day. "
            "Exit codes: 0 all settled and matching our records, 1 a lane failed or its totals "
            "differ, 3 a lane's settlement is unknown or unanswered. One lane: tx settle ID."
        ),
    )
    add_global_options(settle, top=False)
    settle.add_argument("--all", action="store_true", help="settle the fleet now")
    settle.add_argument("--tenant", help="only the lanes of this tenant code")
    settle.add_argument("--host", help="only the lanes this host runs")
    settle.add_argument("--tag", help="only the lanes with this tag (profile field 'tags')")
    settle.add_argument("--concurrency", type=_count, default=20, help="lanes at once (default 20)")
    settle.add_argument("--day", type=_day, help="the business day, YYYY-MM-DD (default today)")
    settle.add_argument(
        "--retries",
        type=_retries,
        default=3,
        help="tries after the first for an offline or busy lane (default 3)",
    )
    settle.add_argument(
        "--retry-delay",
        type=seconds,
        default=5.0,
        metavar="S",
        help="seconds between those tries (default 5)",
    )
    settle.add_argument(
        "--busy-wait",
        type=seconds,
        default=180.0,
        metavar="S",
        help="how long to wait for a lane busy with a transaction (default 180)",
    )
    settle.add_argument(
        "--retry-unknown",
        action="store_true",
        help="settle again lanes whose settlement ended unknown (check the terminal first)",
    )
    settle.add_argument(
        "--via-rq",
        action="store_true",
        help="enqueue the job on the RQ queue ($MULTIPAIR_RQ_QUEUE) and follow it",
    )
    settle.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        help="--via-rq: stop following after this long (the job goes on; default: its timeout)",
    )
    settle.set_defaults(handler=_settle_all_or_usage)
    actions = settle.add_subparsers(dest="action", metavar="ACTION")
    common = Parser(add_help=False)
    add_global_options(common, top=False)
    report = actions.add_parser(
        "report", parents=[common], help="the day's settlement report (table, --csv or --json)"
    )
    report.add_argument("day", type=_day, metavar="DAY", help="the business day, YYYY-MM-DD")
    report.add_argument("--csv", action="store_true", help="one CSV row per lane")
    report.set_defaults(handler=client_command(_report))
    reconcile = actions.add_parser(
        "reconcile",
        parents=[common],
        help="our transaction records against the terminals' settlements of a day",
    )
    reconcile.add_argument("day", type=_day, metavar="DAY", help="the business day, YYYY-MM-DD")
    reconcile.set_defaults(handler=client_command(_reconcile))


def _settle_all_or_usage(args: argparse.Namespace) -> int:
    if not args.all:
        ctx = Context(args)
        ctx.error_line(
            "say what to settle: settle --all (every lane), or tx settle ID for one lane; "
            "settle report DAY shows a day's report"
        )
        return ExitCode.USAGE
    return client_command(_settle_all)(args)


# ---------------------------------------------------------------------- settle --all


async def _settle_all(ctx: Context, client: AsyncClient) -> int:
    args = ctx.args
    day = args.day or business_day(None, _dt.datetime.now(_dt.UTC))
    lanes: dict[str, Any] = {
        k: v for k, v in (("tenant", args.tenant), ("host", args.host), ("tag", args.tag)) if v
    }
    options = FleetOptions(
        concurrency=args.concurrency,
        retries=args.retries,
        retry_delay_s=args.retry_delay,
        busy_wait_s=args.busy_wait,
        retry_unknown=args.retry_unknown,
    )
    ctx.stake = Stake(what="settlement", instance_id="", check=f"multipair settle report {day}")
    ctx.note(f"settling {_which(lanes)} for {day}, {args.concurrency} at a time")
    if args.via_rq:
        result = await _via_rq(ctx, client, day, lanes or None, options)
    else:
        run = FleetSettlement(
            client,
            day,
            options=options,
            progress=lambda lane, record, note: _progress(ctx, lane, record, note),
        )
        result = await run.run(lanes or None)
    ctx.stake = None
    records = [LaneRecord.from_json(lane) for lane in result["lanes"]]
    if ctx.json:
        ctx.emit(result)
    else:
        for entry in result["skipped"]:
            ctx.say(f"skipped {short_id(entry['instance_id'])}: {entry['reason']}")
        ctx.say(_table(records))
        ctx.say(_totals_text(result["totals"]))
    return _exit_code(records)


def _which(lanes: dict[str, Any]) -> str:
    if not lanes:
        return "every enabled, paired lane"
    return "the lanes with " + ", ".join(f"{k} {v}" for k, v in lanes.items())


def _progress(ctx: Context, lane: LaneProfile, record: LaneRecord | None, note: str) -> None:
    if note.startswith(_QUIET_NOTES):
        return
    if record is None:
        ctx.note(f"  {short_id(lane.instance_id)} {lane.serial_number}  {note}")
    else:
        ctx.note(f"  {_lane_line(record, note)}")


def _lane_line(record: LaneRecord, note: str) -> str:
    who = f"{short_id(record.instance_id)} {record.serial_number or '-'}"
    if record.state is LaneState.SETTLED and record.terminal is not None and note == "settled":
        check = "MISMATCH with our records" if record.mismatch else "matches our records"
        return (
            f"{who}  settled: {record.terminal.count} tx "
            f"{format_cents(record.terminal.value_cents)}, {check}"
        )
    if note in (s.value for s in LaneState) or note in (w.value for w in Why):
        why = (
            f": {record.detail}" if record.detail and record.state is not LaneState.SETTLED else ""
        )
        return f"{who}  {note}{why}"
    return f"{who}  {note}"


async def _via_rq(
    ctx: Context,
    client: AsyncClient,
    day: str,
    lanes: dict[str, Any] | None,
    options: FleetOptions,
) -> dict[str, Any]:
    from multipair.jobs.config import JobSettings
    from multipair.jobs.queueing import enqueue_settle_fleet, job_state, rq_connection

    settings = ctx.settings()
    job_settings = JobSettings.from_env()
    connection = rq_connection(settings, job_settings)
    try:
        job_id = await asyncio.to_thread(
            enqueue_settle_fleet,
            connection,
            job_settings,
            business_day=day,
            lanes=lanes,
            concurrency=options.concurrency,
            retries=options.retries,
            retry_delay_s=options.retry_delay_s,
            busy_wait_s=options.busy_wait_s,
            retry_unknown=options.retry_unknown,
        )
        ctx.note(f"enqueued RQ job {job_id} on queue {job_settings.queue!r}; following it")
        store = ReportStore(client.redis, client.keys.prefix)
        shown: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        limit = ctx.args.timeout or job_settings.job_timeout_s
        deadline = loop.time() + limit
        while True:
            state = await asyncio.to_thread(job_state, connection, job_id)
            for iid, record in sorted((await store.lanes(day)).items()):
                stamp = f"{record.state}:{record.reason}:{record.attempt}"
                if shown.get(iid) != stamp and record.state is not LaneState.SENDING:
                    shown[iid] = stamp
                    ctx.note(f"  {_lane_line(record, _note_of(record))}")
            if state.ended:
                if not state.finished or not isinstance(state.result, dict):
                    raise Fail(
                        f"the RQ job {job_id} ended {state.status}: {state.error or 'no result'}; "
                        f"see `multipair settle report {day}`, then run it again",
                        ExitCode.UNKNOWN,
                    )
                return state.result
            if loop.time() > deadline:
                raise Fail(
                    f"the RQ job {job_id} is still {state.status} after {limit:g}s; it goes on: "
                    f"follow it with `multipair settle report {day}`",
                    ExitCode.UNKNOWN,
                )
            await asyncio.sleep(_POLL_S)
    finally:
        await asyncio.to_thread(connection.close)


def _note_of(record: LaneRecord) -> str:
    if record.state is LaneState.SETTLED:
        return "settled"
    return record.reason.value if record.reason is not None else record.state.value


def _exit_code(records: Iterable[LaneRecord]) -> int:
    code = ExitCode.OK
    for record in records:
        if record.state in (LaneState.UNKNOWN, LaneState.SENDING):
            return ExitCode.UNKNOWN
        if record.state is not LaneState.SETTLED or record.mismatch:
            code = ExitCode.FAILED
    return code


# ---------------------------------------------------------------------- report, reconcile


async def _report(ctx: Context, client: AsyncClient) -> int:
    day: str = ctx.args.day
    store = ReportStore(client.redis, client.keys.prefix)
    records = sorted(
        (await store.lanes(day)).values(), key=lambda r: (r.serial_number or "", r.instance_id)
    )
    if not records:
        raise Fail(f"no settlement report for {day} (key {store.key(day)})")
    totals = summarize(records)
    if ctx.json:
        ctx.emit(
            {
                "business_day": day,
                "report_key": store.key(day),
                "lanes": [r.to_json() for r in records],
                "totals": totals,
                "reconcile": await store.reconciled(day),
            }
        )
    elif ctx.args.csv:
        ctx.out.write(_csv(records))
        ctx.out.flush()
    else:
        ctx.say(f"settlement report {day} ({store.key(day)})")
        ctx.say(_table(records))
        ctx.say(_totals_text(totals))
    return ExitCode.OK


async def _reconcile(ctx: Context, client: AsyncClient) -> int:
    result = await reconcile_day(client, ctx.args.day)
    if ctx.json:
        ctx.emit(result)
    else:
        ctx.say(
            f"reconciled {result['business_day']}: {result['settled_lanes']} settled lanes, "
            f"{len(result['mismatches'])} differ from our records, "
            f"{len(result['unsettled'])} with records but not settled"
        )
        for item in result["mismatches"]:
            diff = item["difference"]
            ctx.say(
                f"  MISMATCH {short_id(item['instance_id'])} {item['serial_number']}: terminal "
                f"{item['terminal']['count']} tx {format_cents(item['terminal']['value_cents'])}, "
                f"ours {item['ours']['count']} tx {format_cents(item['ours']['value_cents'])} "
                f"(difference {diff['count']} tx {format_cents(diff['value_cents'])})"
            )
        for item in result["unsettled"]:
            ours = item["ours"]
            ctx.say(
                f"  UNSETTLED {short_id(item['instance_id'])} {item['serial_number']}: "
                f"{item['state'] or 'never tried'}"
                f"{' (' + item['reason'] + ')' if item['reason'] else ''}; ours "
                f"{ours['count']} tx {format_cents(ours['value_cents'])}"
            )
    return ExitCode.OK if result["ok"] else ExitCode.FAILED


# ---------------------------------------------------------------------- formatting


def _table(records: Sequence[LaneRecord]) -> str:
    rows = []
    for r in records:
        terminal, ours = r.terminal, r.ours
        rows.append(
            [
                short_id(r.instance_id),
                r.serial_number,
                r.tenant_code,
                r.state.value,
                None if terminal is None else terminal.count,
                None if terminal is None else format_cents(terminal.value_cents),
                None if ours is None else f"{ours.count} {format_cents(ours.value_cents)}",
                None if r.mismatch is None else ("MISMATCH" if r.mismatch else "ok"),
                _reason(r),
            ]
        )
    headers = ["LANE", "SERIAL", "TENANT", "STATE", "TX", "VALUE", "OURS", "CHECK", "REASON"]
    return render_table(headers, rows)


def _reason(record: LaneRecord) -> str | None:
    if record.reason is None:
        return None
    detail = (record.detail or "").replace("\n", " ")
    if len(detail) > 70:
        detail = detail[:67] + "..."
    return f"{record.reason.value}: {detail}" if detail else record.reason.value


def _totals_text(totals: dict[str, Any]) -> str:
    terminal, ours = totals["terminal"], totals["ours"]
    lines = [
        f"{totals['settled']} of {totals['lanes']} lanes settled, {totals['failed']} failed, "
        f"{totals['unknown']} unknown, {totals['sending']} unanswered; "
        f"{totals['mismatched']} differ from our records",
        f"terminals: {terminal['count']} tx {format_cents(terminal['value_cents'])}; "
        f"our records: {ours['count']} tx {format_cents(ours['value_cents'])}",
    ]
    for name, scheme in terminal["schemes"].items():
        if scheme["count"] or scheme["value_cents"]:
            lines.append(f"  {name}: {scheme['count']} tx {format_cents(scheme['value_cents'])}")
    return "\n".join(lines)


def _csv(records: Sequence[LaneRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        terminal, ours = r.terminal, r.ours
        schemes = (
            ""
            if terminal is None
            else ";".join(
                f"{s.scheme}={s.count}/{s.value_cents}"
                for s in terminal.schemes
                if s.count or s.value_cents
            )
        )
        writer.writerow(
            [
                r.instance_id,
                r.pos_id,
                r.serial_number,
                r.tenant_code,
                r.state.value,
                r.attempt,
                "" if terminal is None else terminal.count,
                "" if terminal is None else terminal.value_cents,
                "" if ours is None else ours.count,
                "" if ours is None else ours.value_cents,
                "" if r.mismatch is None else ("1" if r.mismatch else "0"),
                "" if r.reason is None else r.reason.value,
                r.detail or "",
                "" if terminal is None else terminal.settled_at,
                schemes,
            ]
        )
    return out.getvalue()
