"""``multipair up [--simulate N] [--data-dir DIR]``: the whole service on this machine.

With no ``MULTIPAIR_REDIS_URL`` it starts a private ``redis-server`` (AOF on
in the data folder; loopback only, with a new random password each run,
written with the URL to ``DATA/multipair.env``, mode 0600: ``set -a;
. DATA/multipair.env; set +a`` points another shell's ``multipair`` at it),
then the supervisor, and with ``--simulate N`` a
simulator with N terminals whose lanes it adds and pairs
(:mod:`multipair.stack`). It then shows the live status table until Ctrl-C
or SIGTERM, and stops everything cleanly: the supervisor drains its lanes
first. A data folder left from an earlier run is reused, so lanes stay
paired. Exit codes: 0 after a clean stop, 2 when it could not start.

With --json, stdout carries one JSON object per line and no table:
{"event": "progress", "at", "message"} for each step, {"event": "running",
"at", "redis_url" (password as ***), "env_file" (null with an external Redis),
"host_id", "data_dir"} once everything runs,
{"event": "status", "at", "lanes"} for each refresh (the lanes as
`multipair --json status` shows them), then {"event": "stopping", "at"} and
{"event": "stopped", "at"}. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Final

import orjson

from multipair.broker_schema import format_time
from multipair.exceptions import MultipairError
from multipair.stack import Stack

__all__ = ["DEFAULT_DATA_DIR", "add_up_parser", "run_up"]

DEFAULT_DATA_DIR: Final = Path(".multipair")
_CLEAR: Final = "\x1b[H\x1b[2J"


def add_up_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``multipair up`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run Redis (embedded unless configured), the supervisor and a simulator here",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--simulate", type=int, default=0, metavar="N", help="simulated terminals, one lane each"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"Redis data, master key, simulator state, logs ({DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--host-id", default="local", help="this host's id (local)")
    parser.add_argument("--interval", type=float, default=1.0, help="status refresh seconds")
    parser.set_defaults(handler=run_up)
    return parser


def run_up(args: argparse.Namespace) -> int:
    """The command's handler: 0 after a clean stop, 2 when it could not start."""
    try:
        return asyncio.run(_up(args))
    except MultipairError as exc:
        print(f"multipair: error: {exc}", file=sys.stderr)
        return 2


async def _up(args: argparse.Namespace) -> int:
    # The same table and JSON as `multipair status`.
    from multipair.cli._status import status_json, status_snapshot, status_table
    from multipair.config import Settings
    from multipair.logs import configure_logging

    machine = bool(getattr(args, "json", False))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def emit(event: str, **fields: object) -> None:
        now = format_time(_dt.datetime.now(_dt.UTC))
        sys.stdout.write(orjson.dumps({"event": event, "at": now, **fields}).decode() + "\n")
        sys.stdout.flush()

    def say(text: str) -> None:
        if machine:
            emit("progress", message=text)
        else:
            print(f"multipair up: {text}", flush=True)

    settings = Settings.from_env(
        redis_url=getattr(args, "redis_url", None),
        prefix=getattr(args, "prefix", None),
        master_key_file=getattr(args, "master_key_file", None),
    )
    if machine:  # stdout is data: anything logged in this process goes to stderr
        configure_logging(settings.log_format, level=logging.WARNING)
    stack = Stack(
        args.data_dir,
        simulate=args.simulate,
        settings=settings,
        host_id=args.host_id,
        progress=say,
    )
    async with stack:
        client = stack.client
        assert client is not None
        # The URL may carry the embedded Redis' password: shown masked, and
        # other shells read it from the private env file instead.
        env_file = stack.env_file
        if machine:
            emit(
                "running",
                redis_url=stack.redis_url_for_people,
                env_file=None if env_file is None else str(env_file),
                host_id=args.host_id,
                data_dir=str(args.data_dir),
            )
        else:
            shown = stack.redis_url_for_people
            say(f"running; MULTIPAIR_REDIS_URL={shown}; Ctrl-C stops everything")
            if env_file is not None:
                say(f"other shells: set -a; . {env_file}; set +a  (then: multipair status)")
        tty = sys.stdout.isatty()
        while not stop.is_set():
            infos, exits = await status_snapshot(client)
            now = _dt.datetime.now(_dt.UTC)
            if machine:
                emit("status", **status_json(infos, exits, now))
            else:
                table = status_table(infos, now, exits)
                print((_CLEAR if tty else "\n") + table, flush=True)
            try:
                async with asyncio.timeout(args.interval):
                    await stop.wait()
            except TimeoutError:
                pass
        if machine:
            emit("stopping")
        else:
            say("stopping (the supervisor drains its lanes first)")
    if machine:
        emit("stopped")
    else:
        say("stopped")
    return 0
