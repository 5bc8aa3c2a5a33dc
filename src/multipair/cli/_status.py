"""``multipair status`` (every lane in one table) and ``multipair events ID`` (one lane's log).

Both may run until Ctrl-C (``status --watch``, ``events --follow``), which
ends them with exit code 0. Under ``--json`` each refresh of ``status
--watch`` and each event is one JSON object on its own line.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Mapping
from typing import Final

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
    render_table,
    seconds,
    short_id,
)
from multipair.cli._views import (
    crash_loop_text,
    info_json,
    is_running,
    last_exits,
    resolve_lane,
    uptime_seconds,
)
from multipair.cli.amounts import format_cents
from multipair.client import AsyncClient, LaneInfo

__all__ = [
    "add_events_parser",
    "add_status_parser",
    "describe_event",
    "status_json",
    "status_snapshot",
    "status_table",
]

_CLEAR: Final = "\x1b[H\x1b[2J"
"""ANSI: cursor home, clear screen."""


def add_status_parser(subparsers: Subparsers) -> None:
    """Register ``multipair status``."""
    parser = subparsers.add_parser(
        "status",
        help="one table of every lane; --watch to keep it live",
        description=(
            "Every lane: instance id, POS id, serial, status, flow, host, pid, uptime, restarts "
            "and the last transaction with its result. A lane in crash loop shows "
            "'crash_loop (LAST EXIT)' as its status."
        ),
    )
    add_global_options(parser, top=False)
    parser.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    parser.add_argument(
        "--interval", type=seconds, default=2.0, metavar="S", help="seconds between redraws (2)"
    )
    parser.set_defaults(handler=client_command(_status))


def add_events_parser(subparsers: Subparsers) -> None:
    """Register ``multipair events``."""
    parser = subparsers.add_parser(
        "events",
        help="print a lane's events; --follow for new ones as they come",
        description=(
            "Print a lane's events, oldest first: one line each, or one JSON object per line "
            "with --json (the event's body plus its stream entry_id)."
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
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    parser.set_defaults(handler=client_command(_events))


# ---------------------------------------------------------------------- status


def status_table(
    infos: list[LaneInfo], now: _dt.datetime, last_exit: Mapping[str, str | None] | None = None
) -> str:
    """The ``status`` table (short instance ids); ``last_exit`` (by instance id, from
    :func:`~multipair.cli._views.last_exits`) shows why a crash-looping lane keeps exiting."""
    if not infos:
        return "No lanes. Add one with `multipair lane add`."
    rows = []
    for info in infos:
        running = is_running(info, now)
        status = info.status if running else ("stopped" if not info.profile.enabled else "down")
        if info.crash_loop:
            status = crash_loop_text((last_exit or {}).get(info.instance_id))
        rows.append(
            (
                short_id(info.instance_id),
                info.profile.pos_id,
                info.profile.serial_number,
                status,
                info.flow if running else None,
                info.lease_host or info.host,
                info.pid if running else None,
                format_age(uptime_seconds(info, now)),
                info.restarts,
                info.last_pos_ref_id,
                info.last_result,
            )
        )
    return render_table(
        (
            "ID",
            "POS",
            "SERIAL",
            "STATUS",
            "FLOW",
            "HOST",
            "PID",
            "UPTIME",
            "RESTARTS",
            "LAST TX",
            "RESULT",
        ),
        rows,
    )


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
    infos: list[LaneInfo], exits: Mapping[str, str | None], now: _dt.datetime
) -> dict[str, object]:
    """One ``status --json`` document: ``{"at", "lanes"}``."""
    return {
        "at": format_time(now),
        "lanes": [info_json(i, now, last_exit=exits.get(i.instance_id)) for i in infos],
    }


async def _draw(ctx: Context, client: AsyncClient, *, clear: bool, separate: bool = False) -> None:
    infos, exits = await status_snapshot(client)
    now = _dt.datetime.now(_dt.UTC)
    if ctx.json:
        ctx.emit(status_json(infos, exits, now))
        return
    text = status_table(infos, now, exits)
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
    if args.follow:
        ctx.interrupt_code = ExitCode.OK
    async for entry_id, event in client.events(
        iid, since=since, follow=args.follow, count=args.count
    ):
        if ctx.json:
            ctx.emit({"entry_id": entry_id, **bs.event_body(event)})
        else:
            ctx.say(f"{entry_id:<16} {format_time(event.at)}  {describe_event(event)}")
    return ExitCode.OK


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
