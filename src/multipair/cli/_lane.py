"""``multipair lane ...``: add, pair, list, show, restart, stop, start and remove lanes.

``stop`` and ``start`` are remembered in the profile's ``enabled`` flag (so
no host restarts a stopped lane) and then told to the host that holds the
lane's lease through its control stream; ``restart`` only goes to that host.
Either works from any machine that reaches Redis.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

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
    render_table,
    seconds,
)
from multipair.cli._views import (
    check_ready,
    crash_loop_text,
    info_json,
    is_running,
    last_exits,
    profile_json,
    resolve_lane,
    uptime_seconds,
)
from multipair.client import AsyncClient, ClientError, CommandRejected

__all__ = ["add_lane_parser"]


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
        parser = actions.add_parser(action, parents=[common], help=text, description=text + ".")
        add_lane_argument(parser)
        parser.set_defaults(handler=client_command(_control), control=action)

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
    check_ready(await client.lane_info(iid), need_paired=False)
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
    if ctx.json:
        ctx.emit(_pairing_json(iid, event.state, event.confirmation_code or _last(shown), None))
    else:
        ctx.say(f"Paired: lane {iid} is paired with its terminal.")
    return ExitCode.OK


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
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        if not answered.done():
            answered.set_result(sys.stdin.readline())

    sys.stdout.write(f"Does the terminal show {code}? [y/N] ")
    sys.stdout.flush()
    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        answer = await answered
    finally:
        loop.remove_reader(sys.stdin.fileno())
    return answer.strip().lower() in ("y", "yes")


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
    status = info.status
    if info.crash_loop:
        running += "  (CRASH LOOP: it keeps exiting; the supervisor retries it only slowly)"
        status = f"{crash_loop_text(last_exit)}, last reported {info.status or '-'}"
    rows: list[tuple[str, object]] = [
        ("instance id", p.instance_id),
        ("pos id", p.pos_id),
        ("serial", p.serial_number),
        ("address", "auto (device-address service)" if p.auto_address else p.device_address),
        ("tenant", p.tenant_code),
        ("test mode", _yes(p.test_mode)),
        ("secure", _yes(p.secure)),
        ("enabled", _yes(p.enabled) + ("" if p.enabled else "  (stopped: `lane start` it)")),
        ("created", format_time(p.created_at)),
        ("running", running),
        ("status", status),
        ("flow", info.flow),
        ("owner host", info.lease_host or "none (no host holds its lease)"),
        ("host / pid", f"{info.host or '-'} / {info.pid or '-'}"),
        ("uptime", format_age(uptime_seconds(info))),
        ("heartbeat", format_time(info.heartbeat_at) if info.heartbeat_at else None),
        ("restarts", f"{info.restarts}" + ("  CRASH LOOP" if info.crash_loop else "")),
        ("last exit", last_exit),
        ("last transaction", _last_tx(info.last_pos_ref_id, info.last_result)),
        ("last error", info.last_error),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        ctx.say(f"{key:<{width}}  {'-' if value is None else value}")
    return ExitCode.OK


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _last_tx(ref: str | None, result: str | None) -> str | None:
    return None if ref is None else f"{ref} ({result or '?'})"


# ---------------------------------------------------------------------- restart, stop, start


async def _control(ctx: Context, client: AsyncClient) -> int:
    action: str = ctx.args.control
    iid = await resolve_lane(client, ctx.args.id)
    profile = await client.get_lane(iid)
    if action == "restart" and not profile.enabled:
        raise Fail(f"lane stopped: {iid} is stopped; start it with `multipair lane start {iid}`")
    if action in ("stop", "start"):
        await client.set_enabled(iid, action == "start")
    owner = await client.lane_owner(iid)
    if owner is None and action == "restart":
        raise Fail(f"no host runs lane {iid}, so there is nothing to restart")
    if owner is not None:
        await client.send_control(owner, action, iid)
    if ctx.json:
        ctx.emit(
            {
                "instance_id": iid,
                "action": action,
                "enabled": action != "stop",
                "owner": owner,
                "control_sent": owner is not None,
            }
        )
        return ExitCode.OK
    if owner is not None:
        ctx.say(f"{_past(action)} lane {iid}: sent {action} to host {owner}.")
    elif action == "stop":
        ctx.say(f"Stopped lane {iid}: no host runs it now, and none will until `lane start`.")
    else:
        ctx.say(f"Started lane {iid}: no host owns it yet; a supervisor will pick it up.")
    return ExitCode.OK


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
