"""``multipair lane ...``: add, pair, list, show, restart, stop, start and remove lanes.

``lane set-pat`` (pay at table) lives in :mod:`multipair.cli._pat`.

``stop`` and ``start`` are remembered in the profile's ``enabled`` flag (so
no host restarts a stopped lane) and then told to the host that holds the
lane's lease through its control stream; ``restart`` only goes to that host.
Either works from any machine that reaches Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Parser,
    Stake,
    Subparsers,
    add_global_options,
    add_lane_argument,
    client_command,
    format_age,
    format_time,
    lane_id,
    read_answer,
    render_table,
    seconds,
)
from multipair.cli._logs import connect_failure, follow_log_lines, last_log_id
from multipair.cli._pat import add_set_pat_parser, pat_summary
from multipair.cli._views import (
    crash_loop_text,
    info_json,
    is_running,
    lane_status,
    last_exits,
    profile_json,
    ready_lane,
    resolve_lane,
    uptime_seconds,
)
from multipair.cli.amounts import format_cents
from multipair.client import AsyncClient, ClientError, CommandRejected
from multipair.exceptions import RetryLater
from multipair.store.transactions import TxRecord

__all__ = ["LaneStopped", "add_lane_parser", "control_lane"]


def add_lane_parser(subparsers: Subparsers) -> None:
    """Register ``multipair lane`` and its actions."""
    lane = subparsers.add_parser(
        "lane",
        help="add, pair, stop, start, restart, show and remove lanes",
        description="Manage lanes: one lane is one terminal, served by one process.",
    )
    actions = lane.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = Parser(add_help=False)
    add_global_options(common, top=False)

    add = actions.add_parser(
        "add",
        parents=[common],
        help="create a lane; prints its instance id",
        description="Create a lane for one terminal and print its instance id.",
    )
    add.add_argument("--pos-id", required=True, metavar="POS", help="1-16 letters or digits")
    add.add_argument("--serial", required=True, metavar="SERIAL", help="terminal serial number")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", metavar="ws://HOST:PORT", help="the terminal's address")
    where.add_argument(
        "--auto-address",
        action="store_true",
        help="resolve the address from the serial number (device-address service)",
    )
    add.add_argument("--tenant", metavar="CODE", help="acquirer (tenant) code, e.g. wbc")
    add.add_argument("--test-mode", action="store_true", help="the terminal is a test terminal")
    add.add_argument("--secure", action="store_true", help="use secure websockets (wss://)")
    add.add_argument("--id", metavar="UUID", help="instance id to use (default: a new UUID)")
    add.set_defaults(handler=client_command(_add))

    pair = actions.add_parser(
        "pair",
        parents=[common],
        help="pair the lane with its terminal",
        description=(
            "Send `pair`, show the confirmation code as soon as the terminal shows it, and "
            "wait for the outcome. Exit 0 paired, 1 failed, 2 refused (already paired, or "
            "busy: another pairing runs), 3 timed out or interrupted: the pairing is then "
            "cancelled in the lane (pair_cancel). Without --confirm, asks on a terminal "
            "whether the codes match; otherwise waits for a pair_confirm."
        ),
    )
    add_lane_argument(pair)
    pair.add_argument(
        "--confirm", action="store_true", help="confirm the code without asking (it was checked)"
    )
    pair.add_argument(
        "--timeout",
        type=seconds,
        default=180.0,
        metavar="S",
        help="give up and cancel the pairing after S seconds (180)",
    )
    pair.set_defaults(handler=client_command(_pair))

    listing = actions.add_parser("list", parents=[common], help="list every lane's profile")
    listing.set_defaults(handler=client_command(_list))

    show = actions.add_parser(
        "show",
        parents=[common],
        help="profile, state, owner host, last exit and last error of a lane",
        description=(
            "A lane's profile and state. A lane in crash loop shows as such, with its last "
            "exit; it is not running while its process is down between retries."
        ),
    )
    add_lane_argument(show)
    show.set_defaults(handler=client_command(_show))

    for action, text in (
        ("restart", "restart the lane's process on the host that runs it"),
        ("stop", "stop the lane and keep it stopped (profile enabled=false)"),
        ("start", "let the lane run again (profile enabled=true)"),
    ):
        parser = actions.add_parser(
            action,
            parents=[common],
            help=text + "; or --all lanes (--host H, --status S)",
            description=(
                f"{text[0].upper()}{text[1:]}. With --all instead of ID: every lane, or those "
                "--host and --status keep (as `multipair status` shows them); it asks first "
                "on a terminal, else wants --yes."
            ),
        )
        parser.add_argument(
            "id",
            nargs="?",
            type=lane_id,
            metavar="ID",
            help="the lane's instance id, or its first 4+ characters",
        )
        parser.add_argument("--all", action="store_true", help="every lane the filters keep")
        parser.add_argument("--host", metavar="H", help="with --all: only lanes host H runs")
        parser.add_argument(
            "--status", metavar="S", dest="status_filter", help="with --all: only lanes in status S"
        )
        parser.add_argument("--yes", action="store_true", help="with --all: do not ask")
        if action == "stop":
            parser.add_argument(
                "--wait",
                action="store_true",
                help="return once the lane has stopped (it finishes its running transaction "
                "first; up to --timeout)",
            )
            parser.add_argument("--timeout", type=seconds, default=40.0, metavar="S", help="(40)")
        parser.set_defaults(handler=client_command(_control), control=action)

    txs = actions.add_parser(
        "txs",
        parents=[common],
        help="the lane's transaction records as a table",
        description=(
            "The lane's own transaction records, newest --count (50), oldest first: when, "
            "pos_ref_id, type, amount, state, result and the host's answer. --since takes a "
            "time (2026-01-31T09:00:00Z, 2026-01-31) or an age (90m, 12h, 7d). The lane's "
            "record, not the terminal: `tx status` asks the terminal."
        ),
    )
    add_lane_argument(txs)
    txs.add_argument("--since", type=_since, metavar="WHEN", help="only records from then on")
    txs.add_argument("--count", "-n", type=int, default=50, metavar="N", help="(50)")
    txs.set_defaults(handler=client_command(_txs))

    add_set_pat_parser(actions, common)

    remove = actions.add_parser(
        "remove",
        parents=[common],
        help="unpair and delete a lane, its profile and its keys",
        description=(
            "Unpair the terminal (best effort), stop the lane and delete its profile and every "
            "key it has. Asks for --yes (not needed with --json)."
        ),
    )
    add_lane_argument(remove)
    remove.add_argument("--yes", action="store_true", help="yes, remove it")
    remove.add_argument(
        "--keep-pairing", action="store_true", help="do not tell the terminal to unpair"
    )
    remove.add_argument("--timeout", type=seconds, default=10.0, metavar="S", help="(10)")
    remove.set_defaults(handler=client_command(_remove))


# ---------------------------------------------------------------------- add


async def _add(ctx: Context, client: AsyncClient) -> int:
    args = ctx.args
    profile = await client.add_lane(
        pos_id=args.pos_id,
        serial_number=args.serial,
        device_address=args.address,
        auto_address=args.auto_address,
        tenant_code=args.tenant,
        test_mode=args.test_mode,
        secure=args.secure,
        instance_id=args.id,
    )
    if ctx.json:
        ctx.emit(profile_json(profile))
    else:
        ctx.say(profile.instance_id)
    return ExitCode.OK


# ---------------------------------------------------------------------- pair


async def _pair(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    info = await ready_lane(ctx, client, iid, need_paired=False)
    shown: list[str] = []

    def on_event(event: bs.Event) -> None:
        if isinstance(event, bs.Pairing):
            code = event.confirmation_code
            if code and code not in shown:
                shown.append(code)
                ctx.note(f"Confirmation code: {code} — check it matches the terminal")
            if event.awaiting_terminal:
                ctx.note("Waiting for the operator to confirm on the terminal…")

    confirm: bool | Callable[[str], Awaitable[bool]] = True
    if not ctx.args.confirm:
        interactive = sys.stdin.isatty() and not ctx.json
        confirm = _ask_operator if interactive else False
        if not interactive:
            ctx.note("Waiting for the code to be confirmed (pass --confirm to confirm it here)…")
    ctx.stake = Stake("pairing", iid)
    # Each connection attempt and its error as it happens, from the lane's own log lines:
    # an unreachable terminal is said at once, not after the whole --timeout.
    address = info.profile.device_address
    watcher = asyncio.create_task(_show_connect_failures(ctx, client, iid, address))
    try:
        event = await client.pair(iid, confirm=confirm, timeout=ctx.args.timeout, on_event=on_event)
    except asyncio.CancelledError:
        # Ctrl-C: the client sent pair_cancel for this pairing as it gave up.
        ctx.error_line(
            f"interrupted; asked lane {iid} to cancel the pairing (pair_cancel): "
            f"check `multipair lane show {iid}`"
        )
        ctx.interrupt_code = ExitCode.UNKNOWN
        raise
    except CommandRejected as exc:
        if "already paired" in exc.detail.lower():
            raise Fail(f"lane {iid} is already paired") from None
        if exc.reason == bs.Reason.BUSY:
            raise Fail(f"lane {iid} is busy: {exc.detail}") from None
        raise
    except ClientError as exc:
        if exc.reason != "pairing_failed":
            raise
        code = shown[-1] if shown else None
        if ctx.json:
            ctx.emit(_pairing_json(iid, "failed", code, exc.detail))
        ctx.error_line(f"pairing failed: {exc.detail}")
        return ExitCode.FAILED
    finally:
        ctx.stake = None
        watcher.cancel()
    if ctx.json:
        ctx.emit(_pairing_json(iid, event.state, event.confirmation_code or _last(shown), None))
    else:
        ctx.say(f"Paired: lane {iid} is paired with its terminal.")
    return ExitCode.OK


async def _show_connect_failures(
    ctx: Context, client: AsyncClient, iid: str, address: str | None
) -> None:
    """Say each failed connection attempt of the lane while it pairs (until cancelled)."""
    try:
        cursor = await last_log_id(client, iid)
        async for _, line in follow_log_lines(client, iid, cursor):
            text = connect_failure(line, address)
            if text is not None:
                ctx.note(text)
    except (RetryLater, RedisError):  # the pairing itself reports Redis trouble
        return


def _last(items: list[str]) -> str | None:
    return items[-1] if items else None


def _pairing_json(iid: str, state: str, code: str | None, detail: str | None) -> dict[str, Any]:
    return {
        "instance_id": iid,
        "paired": detail is None,
        "state": state,
        "confirmation_code": code,
        "detail": detail,
    }


async def _ask_operator(code: str) -> bool:
    """Ask on the terminal; Ctrl-C still works (no thread blocked in ``input()``)."""
    return await _ask(f"Does the terminal show {code}? [y/N] ")


# ---------------------------------------------------------------------- list, show


async def _list(ctx: Context, client: AsyncClient) -> int:
    profiles = await client.list_lanes()
    if ctx.json:
        ctx.emit({"lanes": [profile_json(p) for p in profiles]})
        return ExitCode.OK
    if not profiles:
        ctx.say("No lanes. Add one with `multipair lane add`.")
        return ExitCode.OK
    ctx.say(
        render_table(
            ("INSTANCE ID", "POS", "SERIAL", "ADDRESS", "TENANT", "TEST", "ENABLED", "CREATED"),
            (
                (
                    p.instance_id,
                    p.pos_id,
                    p.serial_number,
                    "auto" if p.auto_address else p.device_address,
                    p.tenant_code,
                    "yes" if p.test_mode else "no",
                    "yes" if p.enabled else "no",
                    format_time(p.created_at)[:19].replace("T", " "),
                )
                for p in profiles
            ),
        )
    )
    return ExitCode.OK


async def _show(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    info = await client.lane_info(iid)
    last_exit = (await last_exits(client, [iid]))[iid]
    if ctx.json:
        ctx.emit({**info_json(info, last_exit=last_exit), "profile": profile_json(info.profile)})
        return ExitCode.OK
    p = info.profile
    running = _yes(is_running(info))
    status = lane_status(info, last_exit=last_exit)
    if info.crash_loop:
        running += "  (CRASH LOOP: it keeps exiting; the supervisor retries it only slowly)"
        status = f"{crash_loop_text(last_exit)}, last reported {info.status or '-'}"
    elif status != info.status and info.status:
        status = f"{status} (last reported {info.status})"
    cause = info.last_exit_cause
    rows: list[tuple[str, object]] = [
        ("instance id", p.instance_id),
        ("pos id", p.pos_id),
        ("serial", p.serial_number),
        ("address", "auto (device-address service)" if p.auto_address else p.device_address),
        ("tenant", p.tenant_code),
        ("test mode", _yes(p.test_mode)),
        ("secure", _yes(p.secure)),
        ("enabled", _yes(p.enabled) + ("" if p.enabled else "  (stopped: `lane start` it)")),
        ("pay at table", pat_summary(p.pat)),
        ("created", format_time(p.created_at)),
        ("running", running),
        ("status", status),
        ("flow", info.flow),
        ("owner host", info.lease_host or "none (no host holds its lease)"),
        ("host / pid", f"{info.host or '-'} / {info.pid or '-'}"),
        ("uptime", format_age(uptime_seconds(info))),
        ("heartbeat", format_time(info.heartbeat_at) if info.heartbeat_at else None),
        ("restarts", f"{info.restarts}" + ("  CRASH LOOP" if info.crash_loop else "")),
        ("last exit", f"{last_exit} — {cause}" if last_exit and cause else last_exit or cause),
        ("last transaction", _last_tx(info.last_pos_ref_id, info.last_result)),
        # The lane's own last error; while it cannot run, why its last process ended.
        ("last error", cause if info.crash_loop and cause else info.last_error or cause),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        ctx.say(f"{key:<{width}}  {'-' if value is None else value}")
    return ExitCode.OK


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _last_tx(ref: str | None, result: str | None) -> str | None:
    return None if ref is None else f"{ref} ({result or '?'})"


# ---------------------------------------------------------------------- txs


def _since(text: str) -> _dt.datetime:
    """``--since``: an ISO time (UTC when it has no offset), a date, or an age (90m, 12h, 7d)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    cleaned = text.strip()
    if cleaned[:-1].isdigit() and cleaned[-1:] in units:
        return _dt.datetime.now(_dt.UTC) - _dt.timedelta(
            seconds=int(cleaned[:-1]) * units[cleaned[-1]]
        )
    try:
        moment = _dt.datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a time (2026-01-31T09:00:00Z), a date, or an age (90m, 12h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.UTC)


async def _txs(ctx: Context, client: AsyncClient) -> int:
    if ctx.args.count < 1:
        raise Fail("--count must be at least 1")
    iid = await resolve_lane(client, ctx.args.id)
    await client.get_lane(iid)
    records = await client.transaction_records(iid, since=ctx.args.since, limit=ctx.args.count)
    if ctx.json:
        ctx.emit({"instance_id": iid, "transactions": [_record_json(r) for r in records]})
        return ExitCode.OK
    if not records:
        ctx.say(
            f"No transaction records for lane {iid}" + (" since then." if ctx.args.since else ".")
        )
        return ExitCode.OK
    ctx.say(
        render_table(
            ("CREATED", "POS_REF_ID", "TYPE", "AMOUNT", "STATE", "RESULT", "HOST RESPONSE"),
            (
                (
                    format_time(r.created_at)[:19].replace("T", " "),
                    r.pos_ref_id,
                    r.tx_type,
                    format_cents(r.amount_cents) if r.amount_cents else None,
                    str(r.state),
                    str(r.result) if r.result else None,
                    _host_response(r),
                )
                for r in records
            ),
        )
    )
    return ExitCode.OK


def _outcome_of(record: TxRecord) -> bs.Event | None:
    try:
        return record.outcome_event()
    except Exception:  # a record written by a newer version: its outcome is still shown raw
        return None


def _host_response(record: TxRecord) -> str | None:
    event = _outcome_of(record)
    if not isinstance(event, bs.TransactionCompleted):
        return None
    return " ".join(x for x in (event.host_response_code, event.host_response_text) if x) or (
        ": ".join(x for x in (event.error_reason, event.error_detail) if x) or None
    )


def _record_json(record: TxRecord) -> dict[str, Any]:
    event = _outcome_of(record)
    return {
        "pos_ref_id": record.pos_ref_id,
        "command_id": record.command_id,
        "tx_type": record.tx_type,
        "amount_cents": record.amount_cents,
        "tip_cents": record.tip_cents,
        "cashout_cents": record.cashout_cents,
        "surcharge_cents": record.surcharge_cents,
        "state": str(record.state),
        "result": str(record.result) if record.result else None,
        "created_at": format_time(record.created_at),
        "updated_at": format_time(record.updated_at) if record.updated_at else None,
        "host_response_code": getattr(event, "host_response_code", None),
        "host_response_text": getattr(event, "host_response_text", None),
    }


# ---------------------------------------------------------------------- restart, stop, start


async def _control(ctx: Context, client: AsyncClient) -> int:
    args = ctx.args
    if args.all == (args.id is not None):
        raise Fail("give a lane ID, or --all (with --host H and --status S to narrow it)")
    if not args.all and (args.host is not None or args.status_filter is not None):
        raise Fail("--host and --status choose lanes for --all; with an ID they are not needed")
    if args.all:
        return await _control_many(ctx, client)
    action: str = args.control
    iid = await resolve_lane(client, args.id)
    owner = await control_lane(client, iid, action)
    stopped = None
    if action == "stop" and getattr(args, "wait", False) and owner is not None:
        stopped = await _wait_stopped(ctx, client, [iid])
    if ctx.json:
        doc: dict[str, object] = {
            "instance_id": iid,
            "action": action,
            "enabled": action != "stop",
            "owner": owner,
            "control_sent": owner is not None,
        }
        if stopped is not None:
            doc["stopped"] = not stopped
        ctx.emit(doc)
        return ExitCode.OK if not stopped else ExitCode.UNKNOWN
    if owner is not None:
        ctx.say(f"{_past(action)} lane {iid}: sent {action} to host {owner}.")
        if action == "stop" and stopped is None:
            ctx.say(
                "It finishes its running transaction, then exits: `multipair status` shows it "
                "stopping, then stopped (or pass --wait)."
            )
    elif action == "stop":
        ctx.say(f"Stopped lane {iid}: no host runs it now, and none will until `lane start`.")
    else:
        ctx.say(f"Started lane {iid}: no host owns it yet; a supervisor will pick it up.")
    if stopped is not None:
        if stopped:
            raise Fail(
                f"lane {iid} still runs after {args.timeout:g} s (a long transaction?); it "
                "stops once that ends",
                ExitCode.UNKNOWN,
            )
        ctx.say(f"Lane {iid} has stopped.")
    return ExitCode.OK


class LaneStopped(Fail):
    """``restart`` of a lane that is stopped: it must be started first."""


async def control_lane(
    client: AsyncClient, iid: str, action: str, *, requested_by: str | None = None
) -> str | None:
    """Apply ``restart``, ``stop`` or ``start`` to one lane (``lane`` and the console's
    action): the profile's ``enabled``, then the owning host's control stream. Returns the
    host it was sent to (None: no host runs it); :class:`LaneStopped`, or :class:`Fail`
    when no host runs a lane to restart."""
    profile = await client.get_lane(iid)
    if action == "restart" and not profile.enabled:
        raise LaneStopped(
            f"lane stopped: {iid} is stopped; start it with `multipair lane start {iid}`"
        )
    if action in ("stop", "start"):
        await client.set_enabled(iid, action == "start")
    owner = await client.lane_owner(iid)
    if owner is None and action == "restart":
        raise Fail(f"no host runs lane {iid}, so there is nothing to restart")
    if owner is not None:
        await client.send_control(owner, action, iid, requested_by=requested_by)
    return owner


async def _control_many(ctx: Context, client: AsyncClient) -> int:
    """``lane stop|start|restart --all [--host H] [--status S]``: asked first, then done."""
    from multipair.cli._status import select_lanes, status_snapshot

    args = ctx.args
    action: str = args.control
    infos, exits = await status_snapshot(client)
    now = _dt.datetime.now(_dt.UTC)
    chosen = select_lanes(infos, exits, now, host=args.host, status=args.status_filter)
    if action == "restart":  # only what a host runs can be restarted
        chosen = [i for i in chosen if i.lease_host is not None and i.profile.enabled]
    ids = [i.instance_id for i in chosen]
    where = " ".join(
        part
        for part in (
            f"on host {args.host}" if args.host else "",
            f"in status {args.status_filter}" if args.status_filter else "",
        )
        if part
    )
    what = f"{action} {len(ids)} lane(s)" + (f" {where}" if where else "")
    if not ids:
        if ctx.json:
            ctx.emit({"action": action, "lanes": []})
        else:
            ctx.say(f"No lanes to {action}" + (f" {where}." if where else "."))
        return ExitCode.OK
    if not args.yes and not ctx.json:
        if not sys.stdin.isatty():
            raise Fail(f"refusing to {what} without --yes")
        ctx.say("\n".join(f"  {iid}" for iid in ids))
        if not await _ask(f"{what[0].upper()}{what[1:]}? [y/N] "):
            ctx.say("Nothing done.")
            return ExitCode.FAILED
    done: list[dict[str, object]] = []
    for iid in ids:
        owner = await control_lane(client, iid, action)
        done.append({"instance_id": iid, "owner": owner, "control_sent": owner is not None})
        ctx.say(
            f"{_past(action)} lane {iid}"
            + (f": sent {action} to host {owner}." if owner else ": no host runs it.")
        )
    left: list[str] = []
    if action == "stop" and getattr(args, "wait", False):
        left = await _wait_stopped(ctx, client, ids)
    if ctx.json:
        ctx.emit({"action": action, "lanes": done, "still_running": left})
    if left:
        raise Fail(
            f"{len(left)} lane(s) still run after {args.timeout:g} s: {', '.join(left)}",
            ExitCode.UNKNOWN,
        )
    return ExitCode.OK


async def _wait_stopped(ctx: Context, client: AsyncClient, ids: list[str]) -> list[str]:
    """Wait (up to ``--timeout``) until no process runs the lanes; those still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.args.timeout
    left = list(ids)
    while left and loop.time() < deadline:
        # Nothing to block on: the lease goes and the pid is cleared when the lane exits.
        await asyncio.sleep(0.25)
        left = [iid for iid in left if is_running(await client.lane_info(iid))]
    return left


async def _ask(question: str) -> bool:
    """A yes/no question on the terminal (Ctrl-C still works: no thread blocks)."""
    return (await read_answer(question)).lower() in ("y", "yes")


def _past(action: str) -> str:
    return {"restart": "Restarting", "stop": "Stopping", "start": "Starting"}[action]


# ---------------------------------------------------------------------- remove


async def _remove(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    if not ctx.args.yes and not ctx.json:
        raise Fail(
            f"refusing to remove lane {iid} without --yes "
            "(it unpairs the terminal and deletes the lane's profile and keys)"
        )
    await client.get_lane(iid)  # unknown lane: exit 2 before anything changes
    unpair = not ctx.args.keep_pairing
    await client.remove_lane(iid, unpair=unpair, timeout=ctx.args.timeout)
    if ctx.json:
        ctx.emit({"instance_id": iid, "removed": True, "unpair_requested": unpair})
    else:
        ctx.say(f"Removed lane {iid}.")
    return ExitCode.OK
