"""``multipair up [--simulate N] [--data-dir DIR]``: the whole service on this machine.

With no ``MULTIPAIR_REDIS_URL`` it starts a private ``redis-server`` (AOF on
in the data folder), then the supervisor, and with ``--simulate N`` a
simulator with N terminals whose lanes it adds and pairs
(:mod:`multipair.stack`). It then shows the live status table until Ctrl-C
or SIGTERM, and stops everything cleanly: the supervisor drains its lanes
first. A data folder left from an earlier run is reused, so lanes stay
paired. Exit codes: 0 after a clean stop, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import signal
import sys
from pathlib import Path
from typing import Any, Final

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
    from multipair.cli._status import status_table  # the same table as `multipair status`

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def say(text: str) -> None:
        print(f"multipair up: {text}", flush=True)

    from multipair.config import Settings

    settings = Settings.from_env(
        redis_url=getattr(args, "redis_url", None),
        prefix=getattr(args, "prefix", None),
        master_key_file=getattr(args, "master_key_file", None),
    )
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
        say(f"running; MULTIPAIR_REDIS_URL={stack.redis_url}; Ctrl-C stops everything")
        tty = sys.stdout.isatty()
        while not stop.is_set():
            table = status_table(await client.lanes_info(), _dt.datetime.now(_dt.UTC))
            print((_CLEAR if tty else "\n") + table, flush=True)
            try:
                async with asyncio.timeout(args.interval):
                    await stop.wait()
            except TimeoutError:
                pass
        say("stopping (the supervisor drains its lanes first)")
    say("stopped")
    return 0
