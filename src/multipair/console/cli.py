"""``multipair console [--port 8090] [--bind 127.0.0.1]``: the web console, until Ctrl-C.

It reads ``MULTIPAIR_REDIS_URL`` (``--redis-url``) like every ``multipair``
command; with Redis roles, give it the ``multipair-ops`` user's URL. The
token is ``MULTIPAIR_CONSOLE_TOKEN``, or a new random one printed at start
with the link that logs a browser in. Exit codes: 0 after Ctrl-C or
SIGTERM, 2 when it could not start (Redis unreachable, the port taken, a
token shorter than 16 characters).

With ``--json`` stdout carries one JSON object: ``{"event": "serving",
"url", "login_url"}``; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from typing import Any, Final

import orjson
from redis.exceptions import RedisError

from multipair.config import Settings
from multipair.exceptions import MultipairError, RetryLater

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "add_console_parser",
    "console_token",
    "run_console",
]

DEFAULT_PORT: Final = 8090
DEFAULT_BIND: Final = "127.0.0.1"

TOKEN_ENV: Final = "MULTIPAIR_CONSOLE_TOKEN"  # noqa: S105 - a variable name
_MASTER_KEY_VARS: Final = frozenset({"MULTIPAIR_MASTER_KEY", "MULTIPAIR_MASTER_KEY_FILE"})


def console_token(environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """``MULTIPAIR_CONSOLE_TOKEN``, or a new random one; and whether it was made here."""
    given = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if given:
        return given, False
    return secrets.token_urlsafe(24), True


def add_console_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``multipair console`` (the caller adds the global options)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "console",
        help="a live web console: every lane and host, with restart, stop, start, pair, unpair",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})"
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="ADDR",
        help=f"address to listen on ({DEFAULT_BIND}: this machine only)",
    )
    parser.set_defaults(handler=run_console)
    return parser


def run_console(args: argparse.Namespace) -> int:
    """The command's handler: 0 after a clean stop, 2 when it could not start."""
    try:
        return asyncio.run(_console(args))
    except (MultipairError, RedisError, OSError) as exc:
        print(f"multipair: error: {exc}", file=sys.stderr)
        return 2


async def _console(args: argparse.Namespace) -> int:
    from multipair.client import AsyncClient
    from multipair.console.app import Console, ConsoleConfig
    from multipair.logs import configure_logging

    environ = {k: v for k, v in os.environ.items() if k not in _MASTER_KEY_VARS}
    settings = Settings.from_env(
        environ,
        redis_url=getattr(args, "redis_url", None),
        prefix=getattr(args, "prefix", None),
    )
    machine = bool(getattr(args, "json", False))
    configure_logging(settings.log_format)
    token, made = console_token()
    config = ConsoleConfig(token=token, bind=args.bind, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        client = await AsyncClient.connect(settings)
    except (RedisError, RetryLater, OSError) as exc:
        raise RetryLater(f"Redis unreachable at {settings.redis_url_for_logs()}: {exc}") from None
    async with client:
        try:
            await client.redis.ping()
        except (RedisError, OSError) as exc:
            url = settings.redis_url_for_logs()
            raise RetryLater(f"Redis unreachable at {url}: {exc}") from None
        console = Console(client, config)
        await console.start()
        try:
            if machine:
                document = {"event": "serving", "url": console.url, "login_url": console.login_url}
                sys.stdout.write(orjson.dumps(document).decode() + "\n")
            else:
                print(f"multipair console: serving {console.url} (Ctrl-C stops it)")
                where = "a new token" if made else f"the token in ${TOKEN_ENV}"
                print(f"multipair console: open {console.login_url}  ({where})")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await console.close()
    return 0
