"""``multipair status`` (every lane in one table) and ``multipair events ID`` (one lane's log).

Both may run until Ctrl-C (``status --watch``, ``events --follow``), which
ends them with exit code 0. Under ``--json`` each refresh of ``status
--watch`` and each event is one JSON object on its own line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import shutil
from collections import Counter
from collections.abc import Mapping
from typing import IO, Any, Final

from multipair import broker_schema as bs
from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Subparsers,
    add_global_options,
    add_lane_argument,
    client_command,
    format_age,
    format_time,
    seconds,
    short_id,
)
from multipair.cli._views import (
    crash_loop_text,
    info_json,
    is_running,
    lane_status,
    last_exits,
    resolve_lane,
    uptime_seconds,
)
from multipair.cli.amounts import format_cents
from multipair.client import AsyncClient, LaneInfo
from multipair.exceptions import CommandError
from multipair.redis_conn import as_text, redis_errors

__all__ = [
    "Summary",
    "add_events_parser",
    "add_status_parser",
    "backlogs",
    "crash_causes",
    "describe_event",
    "select_lanes",
    "status_json",
    "status_snapshot",
    "status_table",
    "summarise",
    "terminal_width",
]

_CLEAR: Final = "\x1b[H\x1b[2J"
"""ANSI: cursor home, clear screen."""


def add_status_parser(subparsers: Subparsers) -> None:
    """Register ``multipair status``."""
    parser = subparsers.add_parser(
        "status",
        help="one table of every lane, and a summary; --watch to keep it live",
        description=(
            "Every lane: instance id, POS id, serial, status, flow, host, pid, uptime, restarts "
            "and the last transaction with its result; then one summary line (lanes by status, "
            "commands waiting per lane, hosts) and why each crash-looping lane keeps exiting. "
            "A lane in crash loop shows 'crash_loop (LAST EXIT)' as its status; a stopped one "
            "'stopped' ('stopping' while it finishes its transaction). On a terminal the table "
            "fits its width with fixed columns."
        ),
    )
    add_global_options(parser, top=False)
    parser.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    parser.add_argument(
        "--interval", type=seconds, default=2.0, metavar="S", help="seconds between redraws (2)"
    )
    parser.add_argument("--host", metavar="H", help="only the lanes host H runs")
    parser.add_argument(
        "--status",
        metavar="S",
        dest="status_filter",
        help="only lanes in status S: paired_connected, paired_connecting, unpaired, "
        "crash_loop, stopped, stopping, down, starting",
    )
    parser.set_defaults(handler=client_command(_status))


def add_events_parser(subparsers: Subparsers) -> None:
    """Register ``multipair events``."""
    parser = subparsers.add_parser(
        "events",
        help="print a lane's events; --follow for new ones as they come",
        description=(
            "Print a lane's events, oldest first: one line each, or one JSON object per line "
            "with --json (the event's body plus its stream entry_id). --count N alone: the "
            "newest N; with --since: N from there."
        ),
    )
    add_global_options(parser, top=False)
    add_lane_argument(parser)
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    parser.add_argument(
        "--since",
        metavar="0|ENTRY_ID",
        help="start after this stream entry id; 0 for the oldest kept "
        "(default: 0, or only new events with --follow)",
    )
    parser.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="the newest N events (with --since or --follow: stop after N)",
    )
    parser.set_defaults(handler=client_command(_events))


# ---------------------------------------------------------------------- status


@dataclasses.dataclass(frozen=True, slots=True)
class _Column:
    header: str
    width: int
    """Fixed, so a redraw never shifts the columns (wider content widens it off a terminal)."""
    keep: int
    """Columns with the lowest numbers stay when the terminal is too narrow for all."""


_COLUMNS: Final = (
    _Column("ID", 8, 0),
    _Column("POS", 8, 9),
    _Column("SERIAL", 12, 3),
    _Column("STATUS", 17, 1),
    _Column("FLOW", 11, 4),
    _Column("HOST", 10, 2),
    _Column("PID", 7, 7),
    _Column("UPTIME", 6, 5),
    _Column("RESTARTS", 8, 6),
    _Column("LAST TX", 24, 8),
    _Column("RESULT", 9, 8),
)
_GAP: Final = "  "


def status_table(
    infos: list[LaneInfo],
    now: _dt.datetime,
    last_exit: Mapping[str, str | None] | None = None,
    *,
    width: int | None = None,
) -> str:
    """The ``status`` table (short instance ids); ``last_exit`` (by instance id, from
    :func:`~multipair.cli._views.last_exits`) shows why a crash-looping lane keeps exiting.

    Columns have fixed widths. With ``width`` (a terminal's) the least needed
    columns are left out until the rest fit, and longer values are cut with
    ``…``; without it (a pipe, a file) every column is shown whole.
    """
    if not infos:
        return "No lanes. Add one with `multipair lane add`."
    rows = []
    for info in infos:
        running = is_running(info, now)
        rows.append(
            (
                short_id(info.instance_id),
                info.profile.pos_id,
                info.profile.serial_number,
                lane_status(info, now, (last_exit or {}).get(info.instance_id)),
                info.flow if running else None,
                lane_host(info, now),
                info.pid if running else None,
                format_age(uptime_seconds(info, now)),
                info.restarts,
                info.last_pos_ref_id,
                info.last_result,
            )
        )
    columns = list(_COLUMNS)
    if width is not None:
        while len(columns) > 1 and _table_width(columns) > width:
            columns.remove(max(columns, key=lambda c: (c.keep, _COLUMNS.index(c))))
    picked = [_COLUMNS.index(c) for c in columns]
    lines = []
    for row in [tuple(c.header for c in _COLUMNS), *rows]:
        cells = []
        for index in picked:
            column = _COLUMNS[index]
            text = "-" if row[index] is None else str(row[index])
            if width is not None and len(text) > column.width:
                text = text[: column.width - 1] + "…"
            cells.append(text.ljust(column.width))
        lines.append(_GAP.join(cells).rstrip())
    return "\n".join(lines)


def lane_host(info: LaneInfo, now: _dt.datetime) -> str | None:
    """The host that runs the lane: its lease's, else the one its live process names."""
    return info.lease_host or (info.host if is_running(info, now) else None)


def _table_width(columns: list[_Column]) -> int:
    return sum(c.width for c in columns) + len(_GAP) * (len(columns) - 1)


def select_lanes(
    infos: list[LaneInfo],
    exits: Mapping[str, str | None],
    now: _dt.datetime,
    *,
    host: str | None = None,
    status: str | None = None,
) -> list[LaneInfo]:
    """The lanes ``--host H`` and ``--status S`` keep (``crash_loop`` matches with its exit)."""
    kept = []
    for info in infos:
        if host is not None and host != lane_host(info, now):
            continue
        word = lane_status(info, now, exits.get(info.instance_id)).split(" ", 1)[0]
        if status is not None and word != status:
            continue
        kept.append(info)
    return kept


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """The line under the table: lanes by status, commands waiting, hosts."""

    by_status: dict[str, int]
    backlog: dict[str, int]
    """Instance id -> commands added and not yet answered (only lanes with some)."""
    hosts: list[tuple[str, str, int | None]]
    """(host id, state, lanes it reports)."""

    def line(self, lanes: int) -> str:
        statuses = ", ".join(f"{n} {word}" for word, n in sorted(self.by_status.items()))
        waiting = sum(self.backlog.values())
        backlog = (
            f"backlog {waiting} ("
            + ", ".join(f"{short_id(iid)} {n}" for iid, n in sorted(self.backlog.items()))
            + ")"
            if waiting
            else "backlog 0"
        )
        hosts = ", ".join(
            f"{host} {state}" + ("" if count is None else f" {count} lanes")
            for host, state, count in self.hosts
        )
        return f"{lanes} lanes: {statuses or 'none'}; {backlog}; hosts: {hosts or 'none'}"

    def json(self) -> dict[str, object]:
        return {
            "by_status": self.by_status,
            "backlog": sum(self.backlog.values()),
            "hosts": [
                {"host_id": host, "state": state, "lanes": count}
                for host, state, count in self.hosts
            ],
        }


async def backlogs(client: AsyncClient, instance_ids: list[str]) -> dict[str, int | None]:
    """Commands waiting in each lane's stream: not yet delivered (``lag``) plus delivered
    and not yet answered (``pending``) of the group ``lane``; None when Redis cannot say."""
    if not instance_ids:
        return {}
    async with client.redis.pipeline(transaction=False) as pipe:
        for iid in instance_ids:
            pipe.xinfo_groups(client.keys.commands(iid))
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    found: dict[str, int | None] = {}
    for iid, groups in zip(instance_ids, replies, strict=True):
        found[iid] = None
        if isinstance(groups, Exception):
            continue
        for group in groups or ():
            name = group.get("name") if isinstance(group, dict) else None
            if name not in (bs.CONSUMER_GROUP, bs.CONSUMER_GROUP.encode()):
                continue
            lag, pending = group.get("lag"), group.get("pending")
            if isinstance(lag, int) and isinstance(pending, int):
                found[iid] = lag + pending
    return found


async def summarise(
    client: AsyncClient,
    infos: list[LaneInfo],
    exits: Mapping[str, str | None],
    now: _dt.datetime,
    waiting: Mapping[str, int | None],
) -> Summary:
    """The :class:`Summary` of ``infos`` (and of every host in ``mp:hosts``)."""
    from multipair.cli._hosts import host_state
    from multipair.supervisor.hosts import read_hosts

    by_status: Counter[str] = Counter(
        lane_status(i, now, exits.get(i.instance_id)).split(" ", 1)[0] for i in infos
    )
    with redis_errors():
        entries = await read_hosts(client.redis, client.keys)
    return Summary(
        by_status=dict(by_status),
        backlog={iid: n for iid, n in waiting.items() if n},
        hosts=[(e.host_id, host_state(e), e.lanes) for e in entries],
    )


def crash_causes(infos: list[LaneInfo], exits: Mapping[str, str | None]) -> list[str]:
    """One line per crash-looping lane: why its last process ended."""
    return [
        f"  {short_id(i.instance_id)}  {crash_loop_text(exits.get(i.instance_id))}: "
        f"{i.last_exit_cause or 'no cause given; see the owning host log'}"
        for i in infos
        if i.crash_loop
    ]


async def _status(ctx: Context, client: AsyncClient) -> int:
    if not ctx.args.watch:
        await _draw(ctx, client, clear=False)
        return ExitCode.OK
    ctx.interrupt_code = ExitCode.OK
    clear = ctx.out.isatty() and not ctx.json
    first = True
    while True:
        await _draw(ctx, client, clear=clear, separate=not first and not clear)
        first = False
        # A refresh period, not a stand-in for a condition: the table is redrawn on a clock.
        await asyncio.sleep(ctx.args.interval)


async def status_snapshot(client: AsyncClient) -> tuple[list[LaneInfo], dict[str, str | None]]:
    """Every lane's :class:`LaneInfo`, and the last exit of each one (``None``: none noted)."""
    infos = await client.lanes_info()
    return infos, await last_exits(client, (i.instance_id for i in infos))


def status_json(
    infos: list[LaneInfo],
    exits: Mapping[str, str | None],
    now: _dt.datetime,
    *,
    waiting: Mapping[str, int | None] | None = None,
    summary: Summary | None = None,
) -> dict[str, object]:
    """One ``status --json`` document: ``{"at", "lanes"}`` (and ``"summary"`` when given)."""
    doc: dict[str, object] = {
        "at": format_time(now),
        "lanes": [
            {
                **info_json(i, now, last_exit=exits.get(i.instance_id)),
                "backlog": (waiting or {}).get(i.instance_id),
            }
            for i in infos
        ],
    }
    if summary is not None:
        doc["summary"] = summary.json()
    return doc


def terminal_width(stream: IO[str]) -> int | None:
    """The width of the terminal ``stream`` writes to; None for a pipe or a file."""
    if not stream.isatty():
        return None
    return shutil.get_terminal_size().columns


async def _draw(ctx: Context, client: AsyncClient, *, clear: bool, separate: bool = False) -> None:
    everything, exits = await status_snapshot(client)
    now = _dt.datetime.now(_dt.UTC)
    infos = select_lanes(everything, exits, now, host=ctx.args.host, status=ctx.args.status_filter)
    with redis_errors():
        waiting = await backlogs(client, [i.instance_id for i in infos])
    summary = await summarise(client, infos, exits, now, waiting)
    if ctx.json:
        ctx.emit(status_json(infos, exits, now, waiting=waiting, summary=summary))
        return
    filtered = ctx.args.host is not None or ctx.args.status_filter is not None
    if not infos and filtered:
        text = f"No lanes match (of {len(everything)})."
    else:
        text = status_table(infos, now, exits, width=terminal_width(ctx.out))
    if infos:
        text += "\n\n" + summary.line(len(infos))
        causes = crash_causes(infos, exits)
        if causes:
            text += "\ncrash loop, why:\n" + "\n".join(causes)
    if ctx.args.watch:
        text = f"{format_time(now)[:19].replace('T', ' ')} UTC  ({len(infos)} lanes)\n{text}"
    if clear:
        ctx.out.write(_CLEAR)
    elif separate:
        ctx.out.write("\n")
    ctx.say(text)


# ---------------------------------------------------------------------- events


async def _events(ctx: Context, client: AsyncClient) -> int:
    args = ctx.args
    if args.count is not None and args.count < 1:
        raise Fail("--count must be at least 1")
    iid = await resolve_lane(client, args.id)
    since: str = args.since if args.since is not None else ("$" if args.follow else "0")
    if since != "$" and not _is_entry_id(since):
        raise Fail(f"--since {since!r} is not a stream entry id (like 1718000000000-0) or 0")
    if args.count is not None and args.since is None and not args.follow:
        # --count alone: the newest N (what someone looking at a lane wants), oldest first.
        await client.get_lane(iid)
        for entry_id, event in await _newest_events(client, iid, args.count):
            _show_event(ctx, entry_id, event)
        return ExitCode.OK
    if args.follow:
        ctx.interrupt_code = ExitCode.OK
    async for entry_id, event in client.events(
        iid, since=since, follow=args.follow, count=args.count
    ):
        _show_event(ctx, entry_id, event)
    return ExitCode.OK


def _show_event(ctx: Context, entry_id: str, event: bs.Event) -> None:
    if ctx.json:
        ctx.emit({"entry_id": entry_id, **bs.event_body(event)})
    else:
        ctx.say(f"{entry_id:<16} {format_time(event.at)}  {describe_event(event)}")


async def _newest_events(client: AsyncClient, iid: str, count: int) -> list[tuple[str, bs.Event]]:
    """The newest ``count`` events of the lane, oldest first (unknown types skipped)."""
    with redis_errors():
        reply: Any = await client.redis.xrevrange(client.keys.events(iid), count=count)
    found = []
    for entry_id, fields in reversed(reply or ()):
        try:
            found.append((as_text(entry_id), bs.decode_event(fields)))
        except CommandError:
            continue  # a newer event type, or not an event
    return found


def _is_entry_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


def describe_event(event: bs.Event) -> str:
    """One line for people: the type and what matters about it."""
    parts: list[str | None] = [event.type]
    match event:
        case bs.CommandAccepted():
            parts += [event.command_type, _ref(event.pos_ref_id)]
        case bs.CommandRejected():
            parts += [event.command_type or "?", f"{event.reason}: {event.detail}"]
        case bs.StatusChanged():
            parts += [event.status, event.flow]
        case bs.Pairing():
            parts += [event.state, _kv("code", event.confirmation_code), event.detail]
        case bs.TransactionUpdate():
            parts += [_ref(event.pos_ref_id), event.display_text]
        case bs.SignatureRequired() | bs.AuthCodeRequired():
            parts += [_ref(event.pos_ref_id)]
        case bs.TransactionCompleted() | bs.TransactionLookup():
            host = " ".join(x for x in (event.host_response_code, event.host_response_text) if x)
            parts += [
                event.result,
                event.tx_type,
                format_cents(event.amount_cents) if event.amount_cents is not None else None,
                _ref(event.pos_ref_id),
                host or None,
                "recovered"
                if isinstance(event, bs.TransactionCompleted) and event.recovered
                else None,
                "not found"
                if isinstance(event, bs.TransactionLookup) and not event.found
                else None,
            ]
        case bs.Settlement():
            parts += [event.result, "enquiry" if event.enquiry else None, event.host_response_text]
        case bs.LaneStarted():
            parts += [f"host {event.host}", f"pid {event.pid}", _kv("restarts", event.restarts)]
        case bs.LaneStopped():
            parts += [_kv("host", event.host), _kv("pid", event.pid), event.reason]
        case bs.LaneCrashed():
            parts += [
                _kv("exit", event.exit_code),
                _kv("signal", event.signal),
                _kv("restarts", event.restarts),
                "CRASH LOOP" if event.crash_loop else None,
            ]
        case bs.Error():
            parts += [event.source, f"{event.reason}: {event.detail}"]
        case bs.TerminalStatusReport():
            parts += [event.status, _kv("battery", event.battery_level)]
        case bs.Battery():
            parts += [f"{event.battery_level}%", "charging" if event.charging else None]
    if event.command_id:
        parts.append(f"[{event.command_id}]")
    return "  ".join(p for p in parts if p)


def _ref(pos_ref_id: str | None) -> str | None:
    return _kv("pos_ref_id", pos_ref_id)


def _kv(key: str, value: object) -> str | None:
    return None if value is None or value == "" else f"{key} {value}"
