"""The ``multipair`` command line, for ops and for scripts.

Each subcommand lives in one ``add_<name>_parser(subparsers)`` function that
registers its parser and sets ``handler`` (a function from the parsed
arguments to an exit code); :func:`build_parser` calls them all. Commands
that talk to the lanes are ``async (ctx, client)`` functions built on
:class:`multipair.client.AsyncClient` and wrapped by ``client_command``,
which owns the Redis connection and turns every failure into one line on
stderr and an exit code.

Commands::

    multipair [global options] COMMAND ...
      keygen [--output FILE]
      reseal --old-key-file OLD --new-key-file NEW [--dry-run]
      lane add --pos-id POS --serial SERIAL (--address ws://HOST:PORT | --auto-address)
               [--tenant CODE] [--test-mode] [--secure] [--id UUID]
      lane pair ID [--confirm] [--timeout S]
      lane list | lane show ID
      lane restart|stop|start (ID | --all [--host H] [--status S] [--yes])
      lane remove ID [--yes] [--keep-pairing] [--timeout S]
      lane set-pat ID [--enabled|--disabled] [--operator-ids A,B] [--answer-timeout S]
                   [--labels pay=TEXT,operator=TEXT,table=TEXT] [--[no-]tipping]
                   [--[no-]split-by-amount] [--[no-]equal-split] [--[no-]operator-id]
                   [--[no-]summary-report] [--[no-]table-retrieval]
      status [--watch [--interval S]] [--host H] [--status S]
      tx purchase ID --amount D [--tip D] [--cashout D] [--surcharge D]
                     [--prompt-for-cashout] [--pos-ref-id REF] [--timeout S] [--receipt]
      tx refund ID --amount D [--pos-ref-id REF] [--timeout S] [--receipt]
      tx cashout|moto ID --amount D [--surcharge D] [--pos-ref-id REF] [--timeout S] [--receipt]
      tx preauth open ID --amount D [--pos-ref-id REF] [--timeout S] [--receipt]
      tx preauth topup|partial-cancel ID --preauth-id P --amount D [--pos-ref-id REF] ...
      tx preauth extend|cancel ID --preauth-id P [--pos-ref-id REF] ...
      tx preauth complete ID --preauth-id P --amount D [--surcharge D] [--pos-ref-id REF] ...
      tx account-verify ID [--pos-ref-id REF] [--timeout S] [--receipt]
      tx zip-purchase ID --amount D --store-code CODE [--description TEXT] [--pos-ref-id REF] ...
      tx zip-refund ID --amount D --original-receipt-number N [--pos-ref-id REF] ...
      tx cancel ID [--pos-ref-id REF]
      tx status ID --pos-ref-id REF [--receipt]
      tx settle ID | tx enquiry ID [--receipt]
      tx signature ID (--accept | --decline) [--pos-ref-id REF]
      tx auth-code ID CODE [--pos-ref-id REF]
      settle --all [--tenant T] [--host H] [--tag X] [--concurrency N] [--day DAY]
                   [--retries N] [--retry-delay S] [--busy-wait S] [--retry-unknown]
                   [--via-rq [--timeout S]]
      settle report DAY [--csv] | settle reconcile DAY
      pat serve ID --bills FILE.json
      events ID [--follow] [--since 0|ENTRY_ID] [--count N]
      logs ID [--follow] [--count N] | dead ID [--count N] [--requeue DEAD_ID]
      lane txs ID [--since WHEN] [--count N]
      simulate [--terminals N] ...
      hosts | host drain|accept HOST
      console [--port 8090] [--bind 127.0.0.1]
      supervise ... | up [--simulate N] [--data-dir DIR] [--interval S]
      completion bash|zsh

``ID`` is a lane's instance id, or a unique start of it (at least 4
characters; ``status`` shows the first 8).

Global options, accepted before the subcommand and again after it:
``--redis-url URL`` (``MULTIPAIR_REDIS_URL``), ``--prefix P``
(``MULTIPAIR_PREFIX``), ``--master-key-file FILE`` (``MULTIPAIR_MASTER_KEY``
/ ``MULTIPAIR_MASTER_KEY_FILE``), ``--json``: stdout carries one JSON
document per command, or one JSON object per line for streams (``events``,
``status --watch``, ``up``); progress and prompts then go to stderr.
With neither ``--redis-url`` nor ``MULTIPAIR_REDIS_URL``, a ``.multipair/env``
in the working folder (what ``multipair up`` writes there) supplies the
settings, and one line on stderr says so (:mod:`multipair.envfile`).

Exit codes:

== ==================================================================
0  success; for a transaction: approved
1  the transaction (or pairing, settlement) was declined or failed;
   ``settle --all``/``reconcile``: a lane failed, or its totals differ
   from our records;
   ``tx status``: also the terminal has no such transaction (it never ran);
   ``reseal``: some lane opens under neither key (the others were re-sealed)
2  usage or validation error, or a precondition that stopped the command
   before it sent anything: unknown lane, lane stopped, lane not running,
   lane not paired, a command the lane rejected, Redis unreachable,
   configuration error
3  outcome unknown: timed out, interrupted, Redis lost after a
   transaction was sent, or an unexpected error; ``tx status``: the
   transaction is still in progress on the terminal, or the terminal could
   not say (ask again later); ``settle --all``: a lane's settlement is
   unknown or unanswered (running it again never settles a lane twice)
== ==================================================================

Redis unreachable is 2, not 3, when it is found before anything was sent:
"nothing happened, safe to retry" is what a script needs to know, and it is
distinct from 3 ("look the transaction up before trying again"). Ctrl-C
ends ``status --watch``, ``events --follow`` and ``pat serve`` with 0. Errors are one line,
``multipair: error: ...``; set ``MULTIPAIR_DEBUG=1`` for a traceback of an
unexpected one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import orjson

from multipair import __version__
from multipair.cli._base import ExitCode, Handler, Parser, Subparsers, add_global_options
from multipair.cli._completion import add_completion_parser
from multipair.cli._dead import add_dead_parser
from multipair.cli._hosts import add_hosts_parser
from multipair.cli._lane import add_lane_parser
from multipair.cli._logs import add_logs_parser
from multipair.cli._pat import add_pat_parser
from multipair.cli._reseal import add_reseal_parser
from multipair.cli._settle import add_settle_parser
from multipair.cli._simulate import add_simulate_parser
from multipair.cli._status import add_events_parser, add_status_parser
from multipair.cli._tx import add_tx_parser
from multipair.console.cli import add_console_parser
from multipair.exceptions import ConfigurationError
from multipair.supervisor.cli import add_supervise_parser
from multipair.up import add_up_parser

__all__ = ["ExitCode", "build_parser", "main"]


# ---------------------------------------------------------------------- keygen


def add_keygen_parser(subparsers: Subparsers) -> None:
    """Register ``multipair keygen`` (``multipair.store.secrets_box.keygen_main`` does the work)."""
    parser = subparsers.add_parser(
        "keygen",
        help="make a new master key (base64 of 32 random bytes)",
        description=(
            "Print a new random master key, or write it to a new file (mode 0600, never "
            'overwritten). With --json: {"master_key": ...} or {"output": FILE, ...}.'
        ),
    )
    parser.add_argument(
        "--output", metavar="FILE", help="write the key to this new file (mode 0600) instead"
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    parser.set_defaults(handler=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    from multipair.exceptions import ConfigurationError
    from multipair.store.secrets_box import MasterKey, keygen_main

    argv = [] if args.output is None else ["--output", args.output]
    if not args.json:
        code = keygen_main(argv)
        if code == 0 and args.output is not None:
            fingerprint = MasterKey.from_file(args.output).fingerprint()
            print(
                f"Wrote a new master key to {args.output} (mode 0600), fingerprint "
                f"{fingerprint}. Back it up apart from Redis: without it no pairing opens."
            )
        return code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = keygen_main(argv)
    if code != 0:
        return code
    if args.output is None:
        document = {"master_key": printed.getvalue().strip()}
    else:
        try:
            fingerprint = MasterKey.from_file(args.output).fingerprint()
        except ConfigurationError as exc:  # written a moment ago; only a race gets here
            print(f"multipair: error: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        document = {"output": args.output, "fingerprint": fingerprint}
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    return ExitCode.OK


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = Parser(
        prog="multipair",
        description="One POS backend, many EFTPOS terminals over the mx51 SPI protocol.",
        epilog=(
            "exit codes: 0 success/approved, 1 declined or failed, 2 usage or validation "
            "error (nothing was done), 3 outcome unknown (timed out, or still in progress). "
            "Set MULTIPAIR_DEBUG=1 for tracebacks of unexpected errors."
        ),
    )
    parser.add_argument("--version", action="version", version=f"multipair {__version__}")
    add_global_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_keygen_parser(subparsers)
    add_reseal_parser(subparsers)
    add_lane_parser(subparsers)
    add_status_parser(subparsers)
    add_tx_parser(subparsers)
    add_pat_parser(subparsers)
    add_settle_parser(subparsers)
    add_events_parser(subparsers)
    add_logs_parser(subparsers)
    add_dead_parser(subparsers)
    add_simulate_parser(subparsers)
    add_hosts_parser(subparsers)
    add_global_options(add_supervise_parser(subparsers), top=False)
    add_global_options(add_up_parser(subparsers), top=False)
    add_global_options(add_console_parser(subparsers), top=False)
    add_completion_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multipair`` script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return ExitCode.USAGE
    if args.command not in _WITHOUT_REDIS and getattr(args, "redis_url", None) is None:
        try:
            args.local_env = use_local_env()
        except ConfigurationError as exc:
            print(f"multipair: error: {exc}", file=sys.stderr)
            return ExitCode.USAGE
    return handler(args)


_WITHOUT_REDIS: Final = frozenset({"keygen", "simulate", "up", "completion"})
"""Commands that never read ``.multipair/env`` (``up`` writes it)."""


def use_local_env() -> Path | None:
    """``./.multipair/env`` into the environment when no Redis is configured; says so once.

    The file ``multipair up`` writes (:mod:`multipair.envfile`): a second
    terminal in the same folder needs nothing exported.
    """
    from multipair.config import Settings
    from multipair.envfile import load_local_env

    found = load_local_env()
    if found is not None:
        url = Settings(redis_url=os.environ["MULTIPAIR_REDIS_URL"]).redis_url_for_logs()
        print(
            f"multipair: using {found.relative_to(Path.cwd())} (the Redis of `multipair up` "
            f"here: {url})",
            file=sys.stderr,
        )
    return found
