"""``python -m multipair.worker --instance-id ID``: run one lane in this process.

The supervisor spawns this (forked from a preloaded template); it also runs
by hand for debugging. Same Redis, prefix and master-key options as the CLI.
The process makes itself non-dumpable with no core files before it serves
(:mod:`multipair.hardening`) and logs ``lane process guarded`` saying what
holds. Exit codes: 0 on SIGTERM/SIGINT (after draining), 2 for a configuration or
usage error (the supervisor does not restart those quickly), 4 when the lease
moved to another owner, 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from redis.asyncio import Redis

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import CommandError, ConfigurationError
from multipair.hardening import forget_secret_env, guard_process, process_guards
from multipair.leases import LeaseLost
from multipair.logs import configure_logging, get_logger
from multipair.redis_conn import connect
from multipair.spi import messages
from multipair.store.profiles import ProfileStore
from multipair.store.transactions import TxStore
from multipair.worker.lane import READ_BLOCK_MARGIN_MS, READ_BLOCK_MS, Lane, LaneDeps
from multipair.worker.logship import LogShipper, shipper_client
from multipair.worker.retry import RedisBackoff, is_redis_away, redis_delays

log = get_logger("multipair.worker")

EXIT_LEASE_LOST = 4
"""Exit code of a lane stopped because another host owns it now."""

LANE_SOCKET_TIMEOUT_S = (READ_BLOCK_MS + READ_BLOCK_MARGIN_MS) / 1000
"""The lane's Redis socket timeout: its blocking command read (10 s) plus a margin."""
LANE_MAX_CONNECTIONS = 8
"""The lane's Redis pool: a command waits for a free connection past this many."""


def prepare_for_fork() -> None:
    """Work a lane would do on its first transaction, done once in the template.

    The supervisor's template calls this before it forks lanes: whatever is
    derived here is shared by every lane, copy-on-write, instead of being
    derived again, privately, in each (the message codecs read type hints).
    """
    messages.warm()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m multipair.worker", description="Serve one lane (one terminal)."
    )
    parser.add_argument("--instance-id", required=True, help="the lane's UUID")
    parser.add_argument("--redis-url", help="default: $MULTIPAIR_REDIS_URL")
    parser.add_argument("--prefix", help="key prefix (default: $MULTIPAIR_PREFIX or 'mp')")
    parser.add_argument("--master-key-file", type=Path, help="default: $MULTIPAIR_MASTER_KEY")
    parser.add_argument(
        "--fencing-token",
        type=int,
        help="the lease token of the supervisor that owns this lane (fences every write)",
    )
    return parser


async def serve(instance_id: str, settings: Settings, *, fencing_token: int | None = None) -> None:
    """Run one lane until SIGTERM/SIGINT: the first drains, a second stops at once.

    With ``fencing_token`` (given by the supervisor that holds the lane's
    lease) every write that matters is fenced: if the lease moves on, the
    lane's next write is refused and the lane stops (multipair.leases).
    """
    if settings.redis_url is None:
        raise ConfigurationError("no Redis: set MULTIPAIR_REDIS_URL or pass --redis-url")
    # A single server or any cluster node. The socket timeout leaves room for the
    # lane's long blocking command read (redis-py's default, 5 s, would cut it).
    # A few connections serve a lane: the blocking read holds one, the
    # heartbeat, the runner and a control command take one each at most.
    redis = await _connect_riding_outage(settings.redis_url)
    keys = bs.Keys(settings.prefix)
    deps = LaneDeps(
        redis=redis,
        keys=keys,
        profiles=ProfileStore(
            redis, keys, settings.require_master_key(), fencing_token=fencing_token
        ),
        txs=TxStore(redis, keys, fencing_token=fencing_token),
        settings=settings,
        fencing_token=fencing_token,
        drain_timeout_s=settings.drain_timeout_s,
    )
    lane = Lane(instance_id, deps)
    # Every line this lane logs also goes to its own stream (`multipair logs ID`), from a
    # thread with its own connection: nothing of it runs on this loop.
    shipper = LogShipper(shipper_client(settings.redis_url), keys.logs(instance_id))
    configure_logging(settings.log_format, also=(shipper,))
    shipper.start()
    lane_task = asyncio.create_task(lane.run())

    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            lane.drain()
        else:
            lane.stop_now()  # second signal: do not wait for the transaction

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await lane_task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        configure_logging(settings.log_format)  # stop shipping; what is queued goes out:
        await asyncio.to_thread(shipper.close, 1.0)  # bounded, best effort (the host log has all)
        await redis.aclose()


async def _connect_riding_outage(url: str) -> Redis:
    """The lane's client; a Redis that is away at start is waited for, not a crash.

    A lane started during an outage (a restart after an unrelated exit) would
    otherwise exit at its first connection and count as a crash. The wait uses
    the lane's own backoff and classifier; a signal ends it (default action).
    """
    delays = redis_delays(RedisBackoff())
    waiting = False
    while True:
        try:
            return await connect(
                url, socket_timeout=LANE_SOCKET_TIMEOUT_S, max_connections=LANE_MAX_CONNECTIONS
            )
        except Exception as exc:
            if not is_redis_away(exc):
                raise
            if not waiting:
                waiting = True
                log.warning("redis unreachable at start: waiting for it", error=str(exc)[:200])
        await asyncio.sleep(next(delays))


EXIT_CONFIG = 2
"""Exit code of a lane that cannot start: configuration (master key, profile) or usage."""


def run(
    instance_id: str,
    settings: Settings,
    *,
    fencing_token: int | None = None,
    on_cause: Callable[[str], None] | None = None,
) -> int:
    """Serve one lane in this process and map how it ended to the exit code.

    0 after a clean stop, 2 when it cannot start (configuration or a bad lane),
    4 when another owner took the lane (lease lost), 1 for anything else. The
    supervisor's forked lanes and ``python -m multipair.worker`` both use this.
    ``on_cause`` gets one line saying why the lane ended, when it failed (the
    supervisor writes it into the lane's state hash as ``last_exit_cause``).
    """

    def cause(text: str) -> None:
        if on_cause is not None:
            on_cause(text)

    configure_logging(settings.log_format)
    guard_process()  # forked lanes are guarded already; `python -m multipair.worker` is not
    guards = process_guards()
    log.info(
        "lane process guarded",
        instance_id=instance_id,
        dumpable=guards.dumpable,
        core_limit=guards.core_limit,
    )
    try:
        asyncio.run(serve(instance_id, settings, fencing_token=fencing_token))
    except (ConfigurationError, CommandError) as exc:
        log.error("lane cannot start", error=str(exc))
        cause(f"cannot start: {exc}")
        return EXIT_CONFIG
    except LeaseLost:
        cause("lease lost: another host owns the lane now")
        return EXIT_LEASE_LOST
    except BaseExceptionGroup as group:
        if group.subgroup(LeaseLost) is not None:
            cause("lease lost: another host owns the lane now")
            return EXIT_LEASE_LOST
        fatal = group.subgroup((ConfigurationError, CommandError))
        if fatal is None:
            log.exception("lane failed")
            cause(f"failed: {_first_leaf(group)}")
            return 1
        for problem in fatal.exceptions:
            log.error("lane cannot start", error=str(problem))
        cause(f"cannot start: {_first_leaf(fatal)}")
        return EXIT_CONFIG
    except Exception as exc:
        log.exception("lane failed")
        cause(f"failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> str:
    """The first exception inside (nested) groups, as ``Type: message`` (configuration
    errors by their message alone: it says everything)."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
        inner = inner.exceptions[0]
    if isinstance(inner, ConfigurationError | CommandError):
        return str(inner)
    return f"{type(inner).__name__}: {inner}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(
            redis_url=args.redis_url, prefix=args.prefix, master_key_file=args.master_key_file
        )
    except ConfigurationError as exc:
        print(f"multipair worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    forget_secret_env()  # read once; nothing this process starts inherits it
    return run(args.instance_id, settings, fencing_token=args.fencing_token)


if __name__ == "__main__":
    sys.exit(main())
