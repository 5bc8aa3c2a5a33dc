"""What every ``multipair`` subcommand shares: exit codes, options, output, errors.

Rules this module keeps:

- Exit codes are :class:`ExitCode` and nothing else; the table in the
  package docstring is the contract scripts rely on.
- An error is one line on stderr, ``multipair: error: <what>``, never a
  traceback (``MULTIPAIR_DEBUG=1`` shows one for unexpected errors). The
  mapping from exception to message and exit code lives in :func:`_failure`
  only.
- With ``--json`` stdout carries exactly one JSON document per command (one
  JSON object per line for streams); everything meant for people (progress,
  prompts, notices) goes to stderr then, so ``| jq`` always works. Without
  ``--json`` people read stdout.
- A command that may have moved money marks the context "at stake" before it
  sends anything: from then on, losing Redis, a timeout, Ctrl-C or a bug
  means *outcome unknown* (3), never "nothing happened" (2).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as _dt
import enum
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final, NoReturn, TypeAlias

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from multipair.broker_schema import format_time
from multipair.client import (
    AsyncClient,
    ClientError,
    CommandRejected,
    LaneNotFound,
    OutcomeTimeout,
)
from multipair.config import Settings
from multipair.exceptions import CommandError, ConfigurationError, MultipairError, RetryLater
from multipair.logs import configure_logging
from multipair.redis_conn import connect

__all__ = [
    "Context",
    "ExitCode",
    "Fail",
    "Handler",
    "Parser",
    "Stake",
    "Subparsers",
    "add_global_options",
    "add_lane_argument",
    "client_command",
    "format_age",
    "format_time",
    "interactive",
    "lane_id",
    "read_answer",
    "render_table",
    "seconds",
    "short_id",
]

Handler = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"

DEBUG_ENV: Final = "MULTIPAIR_DEBUG"
_CONNECT_TIMEOUT_S: Final = 5.0
_SOCKET_TIMEOUT_S: Final = 30.0
"""Longer than any blocking read the client makes (``XREAD BLOCK`` in 5 s chunks); redis-py's
own default (5 s) equals that chunk, and an idle wait then fails as "Timeout reading"."""


class ExitCode(enum.IntEnum):
    """The exit codes of every ``multipair`` command (package docstring, "Exit codes")."""

    OK = 0
    """Success; for a transaction: approved."""
    FAILED = 1
    """The transaction (or pairing, settlement) was declined or failed; for ``tx status``
    also: the terminal has no such transaction (it never ran)."""
    USAGE = 2
    """Usage or validation error, or a precondition (unknown lane, lane stopped, not paired,
    Redis unreachable before anything was sent): nothing was done."""
    UNKNOWN = 3
    """The outcome is unknown: timed out, interrupted, or Redis lost after sending; for
    ``tx status`` also: still in progress on the terminal, or the terminal could not say."""


class Fail(Exception):
    """Stop the command with one line on stderr and an exit code (default: usage error)."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Parser(argparse.ArgumentParser):
    """``argparse`` with errors on one line, exit code 2 (``multipair X: error: ...``).

    ``epilog_factory``, when set, makes the epilog only when help is shown (so
    a costly import for the help text is not paid by every command).
    """

    epilog_factory: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog_factory is not None:
            self.epilog = self.epilog_factory()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every Redis command takes: before the subcommand, and again after it.

    On the top parser they have real defaults; repeated on a subcommand their
    default is "absent", so a value given before the subcommand survives.
    """
    absent: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("global options") if top else parser
    group.add_argument(
        "--redis-url",
        default=absent,
        metavar="URL",
        help="the lanes' Redis: redis://, rediss://, unix:// or redis+sentinel://HOSTS/MASTER "
        "(default: $MULTIPAIR_REDIS_URL, or $MULTIPAIR_REDIS_SENTINELS)",
    )
    group.add_argument(
        "--prefix", default=absent, help="key prefix (default: $MULTIPAIR_PREFIX or 'mp')"
    )
    group.add_argument(
        "--master-key-file",
        type=Path,
        default=absent,
        metavar="FILE",
        help="file with the base64 master key (default: $MULTIPAIR_MASTER_KEY[_FILE])",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine output: one JSON document on stdout (streams: one object per line)",
    )


def add_lane_argument(parser: argparse.ArgumentParser) -> None:
    """The ``ID`` positional of every per-lane command."""
    parser.add_argument(
        "id", type=lane_id, metavar="ID", help="the lane's instance id, or its first 4+ characters"
    )


def lane_id(text: str) -> str:
    """An ``ID`` argument: a full instance id, or the start of one (8+ characters shown by
    ``status``), resolved later against the lanes that exist."""
    cleaned = text.strip().lower()
    if not cleaned or any(c not in "0123456789abcdef-" for c in cleaned):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lane id (a UUID, or its first characters as `status` shows them)"
        )
    return cleaned


# ---------------------------------------------------------------------- context


@dataclasses.dataclass
class Stake:
    """A command that may move money (or change pairing) has been, or is being, sent."""

    what: str
    """``purchase``, ``refund``, ``pairing`` ..."""
    instance_id: str
    pos_ref_id: str | None = None
    check: str | None = None
    """The command that finds out what happened, when it is not ``tx status``."""


class Context:
    """One run of one command: parsed arguments, settings, output streams."""

    def __init__(
        self, args: argparse.Namespace, *, out: IO[str] | None = None, err: IO[str] | None = None
    ) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.stake: Stake | None = None
        self.out_closed = False
        """stdout's reader has gone (a pipe closed early): the rest of the output is dropped."""
        self.interrupt_code: ExitCode | None = None
        """The exit code on Ctrl-C, with no more said, set by a command for which Ctrl-C is the
        normal way out (``--watch``, ``--follow``) or that has said what it left behind
        (``lane pair``)."""

    # Output.

    def emit(self, document: object) -> None:
        """One JSON document (or one line of a JSON stream) on stdout."""
        self._write(self.out, orjson.dumps(document, default=_json_default).decode() + "\n")

    def say(self, text: str = "") -> None:
        """Text for people on stdout (human mode only)."""
        if not self.json:
            self._write(self.out, text + "\n")

    def note(self, text: str) -> None:
        """Progress and prompts: stdout for people, stderr under ``--json``."""
        self._write(self.err if self.json else self.out, text + "\n")

    def _write(self, stream: IO[str], text: str) -> None:
        """Write, and carry on when the reader has gone (``| head -1``).

        A closed pipe is not the command's failure: a purchase read by
        ``head -1`` was still approved, and its exit code must say so, not
        "broken pipe". What is left to print is dropped.
        """
        if stream is self.out and self.out_closed:
            return
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            if stream is not self.out:
                return
            self.out_closed = True
            _stdout_to_devnull(stream)

    def error_line(self, message: str) -> None:
        self.err.write(f"multipair: error: {message}\n")
        self.err.flush()

    # Settings.

    def settings(self) -> Settings:
        """The service settings: environment, overridden by the global options.

        The master key is read only when ``--master-key-file`` names it: no CLI
        command opens a lane's secrets (``reseal`` reads its own key files), so a
        bad ``MULTIPAIR_MASTER_KEY[_FILE]`` left in an operator's environment for
        the supervisor never stops ``status``.
        """
        environ = {k: v for k, v in os.environ.items() if k not in _MASTER_KEY_VARS}
        return Settings.from_env(
            environ,
            redis_url=getattr(self.args, "redis_url", None),
            prefix=getattr(self.args, "prefix", None),
            master_key_file=getattr(self.args, "master_key_file", None),
        )


_MASTER_KEY_VARS: Final = frozenset({"MULTIPAIR_MASTER_KEY", "MULTIPAIR_MASTER_KEY_FILE"})


def _stdout_to_devnull(stream: IO[str]) -> None:
    """Point the closed stream's descriptor at /dev/null: the interpreter's last flush at
    exit would otherwise fail once more (the recipe of the ``signal`` module's docs)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _json_default(value: object) -> object:
    if isinstance(value, _dt.datetime):
        return format_time(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


# ---------------------------------------------------------------------- running


ClientCommand = Callable[["Context", AsyncClient], Coroutine[Any, Any, int]]
"""``async (ctx, client) -> exit code``."""


def client_command(function: ClientCommand) -> Handler:
    """Wrap an async command that needs an ``AsyncClient`` into a parser handler."""

    def handler(args: argparse.Namespace) -> int:
        ctx = Context(args)
        return run(ctx, lambda: _with_client(ctx, function))

    handler.__name__ = getattr(function, "__name__", "handler")
    handler.__doc__ = function.__doc__
    return handler


_INTERRUPT_GRACE_S: Final = 2.0
"""After Ctrl-C, how long a command may take to wind down before it is ended anyway."""


def run(ctx: Context, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` in a fresh event loop; every failure becomes one line and an exit code."""
    try:
        return asyncio.run(_interruptible(ctx, main))
    except KeyboardInterrupt:
        return _interrupted(ctx)
    except Exception as exc:
        message, code = _failure(ctx, exc)
        if code is None:
            if os.environ.get(DEBUG_ENV):
                raise
            message += f" (run with {DEBUG_ENV}=1 for a traceback)"
            code = ExitCode.UNKNOWN
        ctx.error_line(message)
        return code


async def _interruptible(ctx: Context, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Ctrl-C cancels the command; if it has not ended ``_INTERRUPT_GRACE_S`` later (a
    cancellation can be absorbed inside a blocking read on Python 3.11), or on a second
    Ctrl-C, the process ends at once with the same line and exit code."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def hard_exit() -> None:
        code = _interrupted(ctx)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:
            hard_exit()
        interrupted = True
        task.cancel()
        loop.call_later(_INTERRUPT_GRACE_S, hard_exit)

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await main()
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _with_client(ctx: Context, function: ClientCommand) -> int:
    settings = ctx.settings()
    configure_logging(settings.log_format, level=logging.WARNING)  # on stderr: stdout is data
    if settings.redis_url is None:
        raise ConfigurationError("no Redis: set MULTIPAIR_REDIS_URL or pass --redis-url URL")
    try:  # connect() talks to the server (a single one, or any node of a Redis Cluster)
        redis = await connect(
            settings.redis_url,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_SOCKET_TIMEOUT_S,
        )
    except RedisError as exc:
        hint = ""
        local = getattr(ctx.args, "local_env", None)
        if local is not None and settings.redis_url == os.environ.get("MULTIPAIR_REDIS_URL"):
            hint = f"; it came from {local}: is `multipair up` running in this folder?"
        raise Fail(f"Redis unreachable at {settings.redis_url_for_logs()} ({exc}){hint}") from None
    try:
        client = AsyncClient(redis, prefix=settings.prefix, master_key=settings.master_key)
        async with client:
            return await function(ctx, client)
    finally:
        await redis.aclose()


def _interrupted(ctx: Context) -> int:
    if ctx.interrupt_code is not None and ctx.stake is None:
        return ctx.interrupt_code
    if ctx.stake is not None:
        ctx.error_line(f"interrupted; {_unknown_hint(ctx.stake)}")
        return ExitCode.UNKNOWN
    ctx.error_line("interrupted")
    return 130


def _unknown_hint(stake: Stake) -> str:
    if stake.check is not None:
        return f"the {stake.what} may still complete: check with `{stake.check}`"
    if stake.pos_ref_id is not None:
        return (
            f"the {stake.what} may still complete: check it with "
            f"`multipair tx status {stake.instance_id} --pos-ref-id {stake.pos_ref_id}`"
        )
    return f"the {stake.what} may still complete: check `multipair lane show {stake.instance_id}`"


def _failure(ctx: Context, exc: BaseException) -> tuple[str, ExitCode | None]:
    """The one line and exit code for an exception; ``None`` code: unexpected (a bug)."""
    stake = ctx.stake
    if isinstance(exc, Fail):
        return exc.message, exc.code
    if isinstance(exc, OutcomeTimeout):
        hint = f"; {_unknown_hint(stake)}" if stake is not None else ""
        return f"{exc.detail or 'timed out'}{hint}", ExitCode.UNKNOWN
    if isinstance(exc, RetryLater | RedisConnectionError | RedisTimeoutError):
        if stake is not None:
            return f"lost Redis ({_cause(exc)}); {_unknown_hint(stake)}", ExitCode.UNKNOWN
        return f"Redis unreachable ({_cause(exc)})", ExitCode.USAGE
    if isinstance(exc, LaneNotFound):
        return f"lane {_detail_id(exc.detail)} not found", ExitCode.USAGE
    if isinstance(exc, CommandRejected):
        return rejected_message(exc.reason, exc.detail), ExitCode.USAGE
    if isinstance(exc, ClientError | CommandError):
        return exc.detail or exc.reason, ExitCode.USAGE
    if isinstance(exc, MultipairError):  # ConfigurationError and the rest: say it as it is
        return str(exc), ExitCode.USAGE if stake is None else ExitCode.UNKNOWN
    if isinstance(exc, RedisError):
        code = ExitCode.USAGE if stake is None else ExitCode.UNKNOWN
        return f"Redis refused: {exc}", code
    if isinstance(exc, OSError):
        code = ExitCode.USAGE if stake is None else ExitCode.UNKNOWN
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), code
    return f"unexpected {type(exc).__name__}: {exc}", None


def rejected_message(reason: str, detail: str) -> str:
    """A lane's ``command_rejected`` in words ("lane not paired" for the usual cases)."""
    lowered = detail.lower()
    if "not paired" in lowered:
        return f"lane not paired ({detail})"
    if reason == "not_allowed":
        return f"the lane cannot do that now: {detail}"
    return f"the lane rejected the command: {reason}: {detail}"


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ if exc.__cause__ is not None else exc
    return str(inner) or type(inner).__name__


def _detail_id(detail: str) -> str:
    for word in detail.split():
        if word.count("-") == 4:
            return word
    return detail


# ---------------------------------------------------------------------- prompts


async def read_answer(question: str) -> str:
    """Ask ``question`` on the terminal and return the line typed (stripped).

    Ctrl-C still works: no thread is blocked in ``input()``; stdin is watched
    by the event loop.
    """
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        if not answered.done():
            answered.set_result(sys.stdin.readline())

    sys.stdout.write(question)
    sys.stdout.flush()
    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        return (await answered).strip()
    finally:
        loop.remove_reader(sys.stdin.fileno())


def interactive(ctx: Context) -> bool:
    """Whether a person answers on this terminal (stdin a TTY, no ``--json``)."""
    return sys.stdin.isatty() and not ctx.json


# ---------------------------------------------------------------------- formatting


def short_id(instance_id: str) -> str:
    """The first 8 hex digits of an instance id, as ``status`` shows it."""
    return instance_id[:8]


def seconds(text: str) -> float:
    """A ``--timeout``/``--interval`` argument: seconds, more than 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds between 0 and 86400")
    return value


def format_age(seconds: float | None) -> str:
    """``12s``, ``4m05s``, ``2h05m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; ``None`` shows as ``-``."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = [
        "  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip()
        for row in [list(headers), *cells]
    ]
    return "\n".join(lines)
