"""``multipair supervise [--host-id H] [--capacity N] [--metrics-port P]``: run this host's lanes.

It runs until SIGTERM. With ``--metrics-port`` (or ``MULTIPAIR_METRICS_PORT``)
it serves Prometheus metrics on ``GET /metrics`` (:mod:`multipair.supervisor.metrics`),
on 127.0.0.1 unless ``--metrics-bind`` (``MULTIPAIR_METRICS_BIND``) says
otherwise; ``--metrics-per-lane`` (``MULTIPAIR_METRICS_PER_LANE=1``) adds
series labelled by lane.

The main CLI (``multipair.cli``) wires it in with::

    from multipair.supervisor.cli import add_supervise_parser
    add_global_options(add_supervise_parser(subparsers), top=False)

``add_supervise_parser`` sets ``handler=run_supervise``, a function from the
parsed arguments to the exit code. The global options ``--redis-url``,
``--prefix`` and ``--master-key-file`` are read from the same namespace when
present. ``python -m multipair.supervisor`` runs the same command with those
options of its own.

Exit codes (those of every ``multipair`` command): 0 after a clean stop
(SIGTERM or SIGINT, once or twice); 2 when it could not start: a
configuration error (no master key, bad host id...) or Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from multipair.config import Settings
from multipair.exceptions import ConfigurationError, RetryLater
from multipair.hardening import forget_secret_env, guard_process
from multipair.logs import configure_logging
from multipair.supervisor.host import DEFAULT_CAPACITY, Host, HostConfig
from multipair.supervisor.metrics import DEFAULT_METRICS_BIND, MetricsConfig
from multipair.supervisor.policy import RestartPolicy

__all__ = [
    "add_global_options",
    "add_supervise_parser",
    "build_parser",
    "main",
    "metrics_config",
    "run_supervise",
]


_DESCRIPTION = (
    "Run this host's share of the lanes, one process each, until SIGTERM or SIGINT: "
    "lanes finish their running transaction, leases are released, exit 0. "
    "A second signal stops the lanes at once."
)


def _capacity(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--host-id",
        metavar="H",
        help="this host's id in leases, mp:hosts and its control stream "
        "(default: $MULTIPAIR_HOST_ID, else the host name)",
    )
    parser.add_argument(
        "--capacity",
        type=_capacity,
        default=DEFAULT_CAPACITY,
        metavar="N",
        help=f"most lanes this host runs (default {DEFAULT_CAPACITY})",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on GET /metrics at this port; 0: any free port, "
        "shown in mp:hosts (default: $MULTIPAIR_METRICS_PORT, else no metrics)",
    )
    parser.add_argument(
        "--metrics-bind",
        metavar="ADDR",
        help="address the metrics listen on "
        f"(default: $MULTIPAIR_METRICS_BIND, else {DEFAULT_METRICS_BIND})",
    )
    parser.add_argument(
        "--metrics-per-lane",
        action="store_true",
        default=None,
        help="also series per lane, labelled with its instance id (one series per lane: "
        "mind a big fleet; default: $MULTIPAIR_METRICS_PER_LANE=1, else off)",
    )
    parser.set_defaults(handler=run_supervise)
    return parser


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0-65535")
    return value


def metrics_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> MetricsConfig | None:
    """The metrics settings: the options, else ``MULTIPAIR_METRICS_*``; None when off."""
    env = os.environ if environ is None else environ
    port: int | None = getattr(args, "metrics_port", None)
    if port is None and env.get("MULTIPAIR_METRICS_PORT"):
        try:
            port = _port(env["MULTIPAIR_METRICS_PORT"].strip())
        except argparse.ArgumentTypeError as exc:
            raise ConfigurationError(f"MULTIPAIR_METRICS_PORT: {exc}") from None
    if port is None:
        return None
    bind = getattr(args, "metrics_bind", None) or env.get("MULTIPAIR_METRICS_BIND") or None
    per_lane = getattr(args, "metrics_per_lane", None)
    if per_lane is None:
        per_lane = env.get("MULTIPAIR_METRICS_PER_LANE", "").strip().lower() in ("1", "true", "yes")
    return MetricsConfig(port=port, bind=bind or DEFAULT_METRICS_BIND, per_lane=per_lane)


def add_supervise_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``supervise`` to the main CLI's subcommands (``parser.add_subparsers()``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "supervise",
        help="run this host's lanes (one process each) until SIGTERM",
        description=_DESCRIPTION,
    )
    return _configure(parser)


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The main CLI's connection options, for ``python -m multipair.supervisor``."""
    parser.add_argument("--redis-url", help="default: $MULTIPAIR_REDIS_URL")
    parser.add_argument("--prefix", help="key prefix (default: $MULTIPAIR_PREFIX or 'mp')")
    parser.add_argument("--master-key-file", type=Path, help="default: $MULTIPAIR_MASTER_KEY")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m multipair.supervisor``."""
    parser = argparse.ArgumentParser(
        prog="python -m multipair.supervisor", description=_DESCRIPTION
    )
    add_global_options(parser)
    return _configure(parser)


def run_supervise(args: argparse.Namespace) -> int:
    """Handler of ``supervise``: run until stopped; the exit code."""
    try:
        settings = Settings.from_env(
            redis_url=getattr(args, "redis_url", None),
            prefix=getattr(args, "prefix", None),
            master_key_file=getattr(args, "master_key_file", None),
            host_id=args.host_id,
        )
        settings.require_master_key()  # the lanes need it; say so now, not per lane
        if settings.redis_url is None:
            raise ConfigurationError("no Redis: set MULTIPAIR_REDIS_URL or pass --redis-url")
        config = HostConfig(
            host_id=settings.host_id,
            capacity=args.capacity,
            policy=RestartPolicy(drain_timeout_s=settings.drain_timeout_s),
            metrics=metrics_config(args),
        )
    except ConfigurationError as exc:
        print(f"multipair supervise: {exc}", file=sys.stderr)
        return 2
    # The key has been read, once: no child inherits it (multipair.hardening),
    # and this process, which holds it, cannot be dumped or ptraced either.
    forget_secret_env()
    guard_process()
    configure_logging(settings.log_format)
    try:
        asyncio.run(Host(settings, config).run())
    except ConfigurationError as exc:
        print(f"multipair supervise: {exc}", file=sys.stderr)
        return 2
    except (RedisError, RetryLater, OSError) as exc:
        print(
            f"multipair supervise: Redis unreachable at {settings.redis_url_for_logs()}: {exc}",
            file=sys.stderr,
        )
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m multipair.supervisor``."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code
