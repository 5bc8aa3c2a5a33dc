"""``multipair up [--simulate N] [--data-dir DIR]``: the whole service on this machine.

With no ``MULTIPAIR_REDIS_URL`` it starts a private ``redis-server`` (AOF on
in the data folder; loopback only, with a password), then the supervisor,
and with ``--simulate N`` a simulator with N terminals whose lanes it adds
and pairs (:mod:`multipair.stack`). It then shows the live status table,
the Redis URL (password hidden) in its header, until Ctrl-C or SIGTERM, and
stops everything cleanly: the supervisor drains its lanes first. A data
folder left from an earlier run is reused: lanes stay paired, and the
Redis keeps its port and password. It writes ``DATA/env`` (mode 0600):
every ``multipair`` command run in the folder holding the default
``.multipair/`` uses it by itself; elsewhere ``set -a; . DATA/env; set +a``
(:mod:`multipair.envfile`). Exit codes: 0 after a clean stop, 2 when it
could not start (one line says why).

With --json, stdout carries one JSON object per line and no table:
{"event": "progress", "at", "message"} for each step, {"event": "running",
"at", "redis_url" (password as ***), "env_file" (null with an external Redis),
"host_id", "data_dir", "console_url" (the web console's link, with its token; null
with --no-console), "metrics_url" (the supervisor's Prometheus metrics; null with
--no-metrics)} once everything runs,
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
from multipair.envfile import LOCAL_DATA_DIR
from multipair.exceptions import MultipairError
from multipair.stack import Stack

__all__ = ["DEFAULT_DATA_DIR", "add_up_parser", "run_up"]

DEFAULT_DATA_DIR: Final = LOCAL_DATA_DIR
_CLEAR: Final = "\x1b[H\x1b[2J"
_DESCRIPTION: Final = """\
Run the whole service on this machine: a private Redis (unless MULTIPAIR_REDIS_URL
names one), the supervisor, and with --simulate N a simulator with N terminals,
one lane each, added and paired. Then show the live status table until Ctrl-C,
which stops everything cleanly (the supervisor drains its lanes first).

Everything is kept in --data-dir (default .multipair, private to you): Redis'
data, the master key, the simulator's pairings, every process's log, and the
file env (MULTIPAIR_REDIS_URL with the password, the key file). The next run
reuses them: lanes stay paired, and Redis keeps its port and password.

Other terminals: every multipair command run in the folder that holds
.multipair/ finds this Redis by itself (it says so once on stderr), e.g.

  multipair status
  multipair tx purchase LANE --amount 12.50

elsewhere: set -a; . /path/to/.multipair/env; set +a

It also serves the web console (--console-port, 8090; its link, with the
token MULTIPAIR_CONSOLE_TOKEN or a new one, is in the header) and the
supervisor's Prometheus metrics (--metrics-port, 9464).

With --json: one JSON object per line (progress, running, status, stopping,
stopped) and no table. Exit codes: 0 after a clean stop, 2 when it could not
start (one line says why)."""


def add_up_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``multipair up`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run Redis (embedded unless configured), the supervisor and a simulator here",
        description=_DESCRIPTION,
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
    parser.add_argument(
        "--console-port",
        type=int,
        default=8090,
        metavar="PORT",
        help="the web console's port on 127.0.0.1 (8090; if taken, any free one)",
    )
    parser.add_argument("--no-console", action="store_true", help="do not serve the console")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        metavar="PORT",
        help="the supervisor's Prometheus /metrics on 127.0.0.1 (9464; if taken, any free one)",
    )
    parser.add_argument("--no-metrics", action="store_true", help="no Prometheus metrics")
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
    from multipair.cli._status import status_json, status_snapshot, status_table, terminal_width
    from multipair.config import Settings
    from multipair.console.embedded import metrics_url, port_or_any, up_console
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
        metrics_port=None if args.no_metrics else port_or_any(args.metrics_port),
    )
    console_port = None if args.no_console else args.console_port
    async with stack, up_console(stack.settings or settings, console_port, say) as console:
        client = stack.client
        assert client is not None
        # Issue 15: the console (its link logs a browser in) and the supervisor's metrics.
        metrics = None if args.no_metrics else await metrics_url(client, args.host_id)
        console_url = None if console is None else console.login_url
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
                console_url=console_url,
                metrics_url=metrics,
            )
        else:
            if stack.port_changed_from is not None:
                say(
                    f"port {stack.port_changed_from} was taken: Redis listens on another one "
                    f"now ({env_file} says which)"
                )
            say(f"running; MULTIPAIR_REDIS_URL={stack.redis_url_for_people}; Ctrl-C stops it")
            if console_url is not None:
                say(f"console: {console_url}")
            if metrics is not None:
                say(f"metrics: {metrics}")
        header = _header(stack.redis_url_for_people, env_file, args.data_dir)
        if console_url is not None:
            header += f"\nconsole {console_url}" + (
                "" if metrics is None else f"  metrics {metrics}"
            )
        tty = sys.stdout.isatty()
        while not stop.is_set():
            infos, exits = await status_snapshot(client)
            now = _dt.datetime.now(_dt.UTC)
            if machine:
                emit("status", **status_json(infos, exits, now))
            else:
                table = status_table(infos, now, exits, width=terminal_width(sys.stdout))
                stamp = format_time(now)[:19].replace("T", " ")
                print((_CLEAR if tty else "\n") + f"{stamp} UTC  {header}\n\n{table}", flush=True)
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


def _header(url: str, env_file: Path | None, data_dir: Path) -> str:
    """The live table's header: where Redis is, and how another terminal gets there."""
    if env_file is None:  # an external Redis: the other terminals have its URL already
        return f"multipair up  Redis {url}  (Ctrl-C stops)"
    here = Path(data_dir) == DEFAULT_DATA_DIR
    other = (
        "other terminals here: just run `multipair status`"
        if here
        else f"other terminals: set -a; . {env_file}; set +a"
    )
    return f"multipair up  Redis {url}  ({other}; Ctrl-C stops)"
