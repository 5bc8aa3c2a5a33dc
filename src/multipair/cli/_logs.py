"""``multipair logs ID [--follow]``: one lane's own log lines, from any machine.

Each lane copies its log lines to ``mp:lane:{ID}:logs`` (trimmed to about
200 lines; :mod:`multipair.worker.logship`), and its host adds a line when
the lane crashes, with the lane's own reason: the newest lines of a lane,
wherever it ran, with no need to find and read the owning host's log.
Without ``--follow`` it prints the newest ``--count`` lines (50), oldest
first; with it, new lines as they come, until Ctrl-C (exit 0). ``--json``:
each line as the JSON object it was logged as, plus its ``entry_id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import orjson

from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Subparsers,
    add_global_options,
    add_lane_argument,
    client_command,
)
from multipair.cli._views import resolve_lane
from multipair.client import AsyncClient
from multipair.redis_conn import as_text, redis_errors

__all__ = [
    "add_logs_parser",
    "connect_failure",
    "follow_log_lines",
    "last_log_id",
    "log_line_text",
]

_BLOCK_MS: Final = 1000
_SHOWN_FIRST: Final = ("timestamp", "level", "event")
_LEFT_OUT: Final = frozenset({"instance_id", "module"})
"""Named by the command already, or noise on one lane's lines."""


def add_logs_parser(subparsers: Subparsers) -> None:
    """Register ``multipair logs``."""
    parser = subparsers.add_parser(
        "logs",
        help="a lane's own recent log lines, from any machine; --follow for new ones",
        description=(
            "Print a lane's newest log lines (each lane keeps about 200 in Redis, wherever it "
            "runs; its host adds a line with the reason when it crashes), oldest first; "
            "--follow prints new ones as they come until Ctrl-C. The whole history is in the "
            "owning host's log."
        ),
    )
    add_global_options(parser, top=False)
    add_lane_argument(parser)
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    parser.add_argument(
        "--count", "-n", type=int, default=50, metavar="N", help="the newest N lines first (50)"
    )
    parser.set_defaults(handler=client_command(_logs))


async def _logs(ctx: Context, client: AsyncClient) -> int:
    if ctx.args.count < 0:
        raise Fail("--count must be 0 or more")
    iid = await resolve_lane(client, ctx.args.id)
    await client.get_lane(iid)  # unknown lane: exit 2
    stream = client.keys.logs(iid)
    with redis_errors():
        newest: Any = (
            await client.redis.xrevrange(stream, count=ctx.args.count) if ctx.args.count else []
        )
    cursor = as_text(newest[0][0]) if newest else await _last_id(client, stream)
    for entry_id, fields in reversed(newest):
        _show(ctx, as_text(entry_id), _decode(fields))
    if not ctx.args.follow:
        if not newest and not ctx.json:
            ctx.say(f"No log lines of lane {iid} yet (it has not run since this version).")
        return ExitCode.OK
    ctx.interrupt_code = ExitCode.OK
    async for entry_id, line in follow_log_lines(client, iid, cursor):
        _show(ctx, entry_id, line)
    return ExitCode.OK  # pragma: no cover - the loop ends by Ctrl-C


async def _last_id(client: AsyncClient, stream: str) -> str:
    with redis_errors():
        newest: Any = await client.redis.xrevrange(stream, count=1)
    return as_text(newest[0][0]) if newest else "0-0"


async def last_log_id(client: AsyncClient, iid: str) -> str:
    """Where the lane's log stream ends now (``0-0`` when empty): a cursor to follow from."""
    return await _last_id(client, client.keys.logs(iid))


async def follow_log_lines(
    client: AsyncClient, iid: str, cursor: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The lane's log lines after ``cursor``, as they come, for ever."""
    stream = client.keys.logs(iid)
    while True:
        with redis_errors():
            reply: Any = await client.redis.xread({stream: cursor}, count=100, block=_BLOCK_MS)
        for _, entries in reply or ():
            for entry_id, fields in entries:
                cursor = as_text(entry_id)
                yield cursor, _decode(fields)


def _decode(fields: Any) -> dict[str, Any]:
    raw = None
    for name, value in (fields or {}).items():
        if as_text(name) == "line":
            raw = value
    try:
        line = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        line = None
    return line if isinstance(line, dict) else {"event": "(unreadable line)"}


def _show(ctx: Context, entry_id: str, line: dict[str, Any]) -> None:
    if ctx.json:
        ctx.emit({"entry_id": entry_id, **line})
    else:
        ctx.say(log_line_text(line))


def log_line_text(line: dict[str, Any]) -> str:
    """One line for people: ``TIME LEVEL event  key=value ...`` (a traceback below it)."""
    when = str(line.get("timestamp", ""))[:23].replace("T", " ")
    level = str(line.get("level", "")).upper()
    parts = [f"{when:<23}", f"{level:<7}", str(line.get("event", ""))]
    extras = [
        f"{key}={value}"
        for key, value in line.items()
        if key not in _SHOWN_FIRST
        and key not in _LEFT_OUT
        and key != "exception"
        and value is not None
    ]
    text = " ".join(parts) + ("  " + " ".join(extras) if extras else "")
    exception = line.get("exception")
    return text + (f"\n{exception}" if isinstance(exception, str) else "")


def connect_failure(line: dict[str, Any], address: str | None) -> str | None:
    """The words for a lane's ``terminal connect failed`` line, or None for any other line."""
    if line.get("event") != "terminal connect failed":
        return None
    error, detail = str(line.get("error") or ""), str(line.get("detail") or "")
    why = {
        "ConnectionRefusedError": "connection refused",
        "TimeoutError": "no answer (timed out)",
        "InvalidURI": f"not a websocket address ({detail})",
    }.get(error) or (f"{error}: {detail}" if detail else error or "failed")
    attempt = line.get("attempt")
    where = address or "the terminal"
    return f"cannot connect to {where}: {why}, retrying" + (
        f" (attempt {attempt})" if attempt else ""
    )
