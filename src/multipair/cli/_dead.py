"""``multipair dead ID [--count N] [--requeue ENTRY]``: a lane's dead letters.

A command entry the lane refused as malformed, expired on arrival, or could
not handle (``internal_error``, ``poison_entry``) is copied, as received, to
``mp:lane:{ID}:dead`` with its original ``entry_id``, the ``reason`` and a
``detail`` (docs/broker-schema.md, "Keys"). This lists the newest ones,
oldest first, and ``--requeue ENTRY`` adds one back to the lane's command
stream exactly as it was received (after a fix on our side: a lane that
failed on it with ``internal_error`` or ``poison_entry``). An entry that the
lane refused for what it says (bad JSON, a wrong field, expired) would be
refused again: requeueing it is refused, send a corrected command instead;
so is one kept only in part (a huge entry).

The requeued entry keeps its ``command_id``: a money command already
recorded is answered from its record, never run twice (docs/integration.md,
"Idempotency").
"""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any, Final

from redis.exceptions import WatchError

from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Subparsers,
    add_global_options,
    add_lane_argument,
    client_command,
    format_time,
    render_table,
)
from multipair.cli._views import resolve_lane
from multipair.client import AsyncClient
from multipair.redis_conn import RAW_REPLY, allow_raw_replies, as_text, redis_errors

__all__ = ["REQUEUEABLE", "DeadLetter", "add_dead_parser", "parse_dead_letter"]

REQUEUEABLE: Final = frozenset({"internal_error", "poison_entry"})
"""Reasons that are about the lane, not the entry: the same entry may work once fixed."""
_TRAILER: Final = ("entry_id", "reason", "detail")
_PARTIAL: Final = frozenset({"size", "sha256"})


class DeadLetter:
    """One dead-letter entry: the fields as received, and why they were refused."""

    __slots__ = ("dead_id", "detail", "entry_id", "fields", "partial", "reason")

    def __init__(
        self,
        dead_id: str,
        fields: list[tuple[bytes, bytes]],
        entry_id: str,
        reason: str,
        detail: str,
        partial: bool,
    ) -> None:
        self.dead_id = dead_id
        self.fields = fields
        self.entry_id = entry_id
        self.reason = reason
        self.detail = detail
        self.partial = partial

    def body_text(self, limit: int = 120) -> str:
        """The received ``body`` (or every field) for people, cut at ``limit``."""
        bodies = [value for name, value in self.fields if name == b"body"]
        raw = bodies[0] if len(bodies) == 1 else b" ".join(n + b"=" + v for n, v in self.fields)
        text = raw.decode("utf-8", errors="backslashreplace")
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def json(self) -> dict[str, Any]:
        return {
            "dead_entry_id": self.dead_id,
            "entry_id": self.entry_id,
            "reason": self.reason,
            "detail": self.detail,
            "partial": self.partial,
            "fields": [
                [n.decode("utf-8", "backslashreplace"), v.decode("utf-8", "backslashreplace")]
                for n, v in self.fields
            ],
        }


def parse_dead_letter(dead_id: str, flat: list[Any]) -> DeadLetter:
    """A raw ``XRANGE`` entry of the dead stream (pairs as stored; repeats kept)."""
    pairs = [(_bytes(flat[i]), _bytes(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]
    trailer = dict((n.decode("utf-8", "replace"), v) for n, v in pairs[-3:])
    if len(pairs) >= 3 and tuple(trailer) == _TRAILER:
        pairs = pairs[:-3]
    else:
        trailer = {}
    received = pairs
    partial = False
    if len(received) >= 2 and {n.decode("utf-8", "replace") for n, _ in received[-2:]} == _PARTIAL:
        received, partial = received[:-2], True
    return DeadLetter(
        dead_id,
        received,
        trailer.get("entry_id", b"?").decode("utf-8", "replace"),
        trailer.get("reason", b"?").decode("utf-8", "replace"),
        trailer.get("detail", b"").decode("utf-8", "replace"),
        partial,
    )


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def add_dead_parser(subparsers: Subparsers) -> None:
    """Register ``multipair dead``."""
    parser = subparsers.add_parser(
        "dead",
        help="a lane's dead letters (refused command entries); --requeue one",
        description=(
            "List the newest dead letters of a lane, oldest first: refused command entries "
            "as received, with the reason. --requeue ENTRY (its DEAD ID) adds one back to the "
            "lane's command stream as it was received: only for internal_error and "
            "poison_entry (an entry refused for its content would be refused again)."
        ),
    )
    add_global_options(parser, top=False)
    add_lane_argument(parser)
    parser.add_argument("--count", "-n", type=int, default=20, metavar="N", help="(20)")
    parser.add_argument("--requeue", metavar="DEAD_ID", help="add this dead letter back")
    parser.add_argument("--yes", action="store_true", help="requeue without asking")
    parser.set_defaults(handler=client_command(_dead))


async def _dead(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    await client.get_lane(iid)
    stream = client.keys.dead_letter(iid)
    if ctx.args.requeue is not None:
        return await _requeue(ctx, client, iid, stream, ctx.args.requeue)
    if ctx.args.count < 1:
        raise Fail("--count must be at least 1")
    allow_raw_replies(client.redis, "XREVRANGE")
    execute: Any = client.redis.execute_command
    with redis_errors():
        reply = await execute(
            "XREVRANGE", stream, "+", "-", "COUNT", ctx.args.count, **{RAW_REPLY: True}
        )
    letters = [parse_dead_letter(as_text(eid), list(flat or ())) for eid, flat in reversed(reply)]
    if ctx.json:
        ctx.emit({"instance_id": iid, "dead_letters": [d.json() for d in letters]})
        return ExitCode.OK
    if not letters:
        ctx.say(f"No dead letters for lane {iid}.")
        return ExitCode.OK
    ctx.say(
        render_table(
            ("DEAD ID", "AT", "REASON", "DETAIL", "RECEIVED"),
            (
                (
                    d.dead_id,
                    _when(d.dead_id),
                    d.reason,
                    d.detail[:60],
                    d.body_text(),
                )
                for d in letters
            ),
        )
    )
    return ExitCode.OK


def _when(entry_id: str) -> str:
    ms = entry_id.partition("-")[0]
    if not ms.isdigit():
        return "-"
    return format_time(_dt.datetime.fromtimestamp(int(ms) / 1000, _dt.UTC))[:19].replace("T", " ")


async def _requeue(ctx: Context, client: AsyncClient, iid: str, stream: str, dead_id: str) -> int:
    allow_raw_replies(client.redis, "XRANGE")
    execute: Any = client.redis.execute_command
    with redis_errors():
        reply = await execute("XRANGE", stream, dead_id, dead_id, **{RAW_REPLY: True})
    if not reply:
        raise Fail(f"no dead letter {dead_id} for lane {iid} (see `multipair dead {iid}`)")
    letter = parse_dead_letter(as_text(reply[0][0]), list(reply[0][1] or ()))
    if letter.partial:
        raise Fail(f"dead letter {dead_id} keeps only part of the entry: it cannot be sent again")
    if letter.reason not in REQUEUEABLE:
        raise Fail(
            f"dead letter {dead_id} was refused for what it says ({letter.reason}: "
            f"{letter.detail}); sent again it would be refused again: send a corrected command"
        )
    if not ctx.args.yes and not ctx.json:
        if not sys.stdin.isatty():
            raise Fail(f"refusing to requeue {dead_id} without --yes")
        from multipair.cli._lane import _ask

        ctx.say(f"{dead_id}  {letter.reason}  {letter.body_text(400)}")
        if not await _ask("Add it back to the lane's command stream? [y/N] "):
            ctx.say("Nothing done.")
            return ExitCode.FAILED
    new_id = await _add_back(client, iid, letter.fields)
    if ctx.json:
        ctx.emit({"instance_id": iid, "requeued": dead_id, "entry_id": new_id})
    else:
        ctx.say(f"Requeued {dead_id} as command entry {new_id} of lane {iid}.")
    return ExitCode.OK


async def _add_back(client: AsyncClient, iid: str, fields: list[tuple[bytes, bytes]]) -> str:
    """``XADD`` the fields as received, only while the lane exists (as the client's ``send``)."""
    profile, commands = client.keys.profile(iid), client.keys.commands(iid)
    flat: list[bytes] = [part for pair in fields for part in pair]
    with redis_errors():
        async with client.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(profile)
                    if not await pipe.execute_command("EXISTS", profile):
                        raise Fail(f"lane {iid} not found")
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.execute_command("XADD", commands, "*", *flat)
                    (added,) = await pipe.execute()
                    return as_text(added)
                except WatchError:
                    continue
