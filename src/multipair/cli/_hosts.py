"""``multipair hosts`` (every supervisor at a glance) and ``multipair host drain|accept H``.

``hosts`` reads ``mp:hosts`` (each supervisor's heartbeat, every 2 s) and
counts the lane leases naming each host. ``host drain H`` puts a ``drain``
message on H's control stream: H stops taking lanes and hands its lanes to
the other hosts one by one, each between two transactions, until it holds
none (``--wait`` waits for that). ``host accept H`` ends a drain. Both work
from any machine that reaches Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from multipair import broker_schema as bs
from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Parser,
    Subparsers,
    add_global_options,
    client_command,
    format_age,
    render_table,
    seconds,
)
from multipair.client import AsyncClient
from multipair.exceptions import ConfigurationError, RetryLater
from multipair.leases import parse_lease
from multipair.redis_conn import as_text, redis_errors
from multipair.supervisor.control import (
    ControlAction,
    ControlMessage,
    default_requester,
    send_control,
)
from multipair.supervisor.hosts import HostEntry, read_hosts
from multipair.supervisor.policy import RestartPolicy

__all__ = ["add_hosts_parser", "host_fields", "host_state", "hosts_table", "room_elsewhere"]

LIVE_WITHIN_S: Final = RestartPolicy().host_live_s
"""A heartbeat older than this: the host is not live (it gets no share of the lanes)."""
_POLL_S: Final = 0.25

T = TypeVar("T")
_HANDOFF_GRACE_S: Final = 10.0
"""How long a drained lane may take to be picked up by another host before it counts as down."""


def add_hosts_parser(subparsers: Subparsers) -> None:
    """Register ``multipair hosts`` and ``multipair host drain|accept H``."""
    hosts = subparsers.add_parser(
        "hosts",
        help="every supervisor: heartbeat age, capacity, lanes held, accepting",
        description=(
            "Every host in mp:hosts: its state (live, draining, stopping, or stale when its "
            "heartbeat is older than "
            f"{LIVE_WITHIN_S:g} s), heartbeat age, capacity, lanes it reports, leases that name "
            "it, whether it accepts lanes, its pid."
        ),
    )
    add_global_options(hosts, top=False)
    hosts.set_defaults(handler=client_command(_hosts))

    host = subparsers.add_parser(
        "host",
        help="drain a host (move its lanes away gracefully) or let it accept lanes again",
        description="Ops actions on one supervisor, through its control stream.",
    )
    actions = host.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = Parser(add_help=False)
    add_global_options(common, top=False)

    drain = actions.add_parser(
        "drain",
        parents=[common],
        help="move every lane of host H to the other hosts, between transactions",
        description=(
            "Tell host H to stop taking lanes and hand each of its lanes to the other hosts, "
            "one by one, each after its running transaction; H keeps running with no lanes, "
            "ready to be stopped. With --wait, return once H holds no lane (exit 3 when "
            "--timeout passes first). Refused (exit 2) when no other live host has room for "
            "H's lanes, since they would all go down, unless --force."
        ),
    )
    drain.add_argument("host_id", metavar="H", help="the host id (see `multipair hosts`)")
    drain.add_argument("--wait", action="store_true", help="wait until H holds no lane")
    drain.add_argument(
        "--force",
        action="store_true",
        help="drain even when no other live host has room for H's lanes (they go down)",
    )
    drain.add_argument(
        "--timeout", type=seconds, default=300.0, metavar="S", help="with --wait (300)"
    )
    drain.set_defaults(handler=client_command(_drain))

    for name in ("accept", "undrain"):
        accept = actions.add_parser(
            name,
            parents=[common],
            help="host H takes lanes again (ends a drain)" if name == "accept" else "= accept",
            description="Tell host H to take lanes again: the end of a drain.",
        )
        accept.add_argument("host_id", metavar="H", help="the host id (see `multipair hosts`)")
        accept.set_defaults(handler=client_command(_accept))


# ---------------------------------------------------------------------- hosts


def host_state(entry: HostEntry) -> str:
    """``live``, ``draining``, ``stopping`` (SIGTERM, lanes draining) or ``stale``."""
    if not entry.live(LIVE_WITHIN_S):
        return "stale"
    if entry.draining:
        return "draining"
    if not entry.accepting:
        return "stopping"
    return "live"


def hosts_table(entries: list[HostEntry], leases: Counter[str]) -> str:
    """The ``hosts`` table."""
    if not entries:
        return "No hosts. Start one with `multipair supervise --host-id H`."
    return render_table(
        ("HOST", "STATE", "HEARTBEAT", "CAPACITY", "LANES", "LEASES", "ACCEPTING", "PID"),
        [
            (
                e.host_id,
                host_state(e),
                None if e.age_s is None else f"{format_age(e.age_s)} ago",
                e.capacity,
                e.lanes,
                leases.get(e.host_id, 0),
                "yes" if e.accepting else "no",
                e.pid,
            )
            for e in entries
        ],
    )


def host_fields(entry: HostEntry, **counted: Any) -> dict[str, Any]:
    """One supervisor as JSON (``hosts --json``, the console): its heartbeat and state;
    ``counted``, what the caller counted of its lanes, follows ``lanes``."""
    return {
        "host_id": entry.host_id,
        "state": host_state(entry),
        "heartbeat_at": entry.heartbeat_at,
        "heartbeat_age_s": None if entry.age_s is None else round(entry.age_s, 3),
        "capacity": entry.capacity,
        "lanes": entry.lanes,
        **counted,
        "accepting": entry.accepting,
        "draining": entry.draining,
        "pid": entry.pid,
        "started_at": entry.started_at,
    }


async def _lease_counts(client: AsyncClient) -> Counter[str]:
    """How many lanes' leases name each host (what each host really holds now)."""
    redis, keys = client.redis, client.keys
    ids = sorted(as_text(raw) for raw in await redis.smembers(keys.lanes()))
    counts: Counter[str] = Counter()
    if not ids:
        return counts
    async with redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.get(keys.lease(iid))
        replies: list[Any] = await pipe.execute()
    for raw in replies:
        lease = parse_lease(raw)
        if lease is not None:
            counts[lease.host_id] += 1
    return counts


async def _hosts(ctx: Context, client: AsyncClient) -> int:
    entries = await read_hosts(client.redis, client.keys)
    leases = await _lease_counts(client)
    if ctx.json:
        ctx.emit({"hosts": [host_fields(e, leases=leases.get(e.host_id, 0)) for e in entries]})
    else:
        ctx.say(hosts_table(entries, leases))
    return ExitCode.OK


# ---------------------------------------------------------------------- drain / accept


def _host_id(text: str) -> str:
    try:
        return bs.validate_host_id(text)
    except ConfigurationError as exc:
        raise Fail(str(exc)) from None


async def _known_host(client: AsyncClient, host_id: str) -> HostEntry:
    for entry in await read_hosts(client.redis, client.keys):
        if entry.host_id == host_id:
            return entry
    raise Fail(f"no host {host_id!r} in {client.keys.hosts()} (see `multipair hosts`)")


async def _send(client: AsyncClient, host_id: str, action: ControlAction) -> str:
    request_id = f"cli-{uuid.uuid4().hex[:12]}"
    message = ControlMessage(action=action, request_id=request_id, requested_by=default_requester())
    await send_control(client.redis, client.keys, host_id, message)
    return request_id


async def _drain(ctx: Context, client: AsyncClient) -> int:
    host_id = _host_id(ctx.args.host_id)
    entry = await _known_host(client, host_id)
    if not entry.live(LIVE_WITHIN_S):
        ctx.note(
            f"warning: {host_id}'s heartbeat is {format_age(entry.age_s)} old: it may not be "
            "running; its leases move when they expire anyway"
        )
    held = (await _lease_counts(client)).get(host_id, 0)
    room = room_elsewhere(await read_hosts(client.redis, client.keys), host_id)
    if held > room:
        where = (
            "no other live host takes lanes"
            if room == 0
            else f"the other live hosts have room for {room}"
        )
        if not ctx.args.force:
            raise Fail(
                f"host {host_id} holds {held} lane(s) and {where}: drained, "
                f"{held - room} lane(s) would go down (no host runs them) until a host has room. "
                "Start another host first (`multipair hosts`), or pass --force to drain anyway"
            )
        ctx.note(f"warning: {where}: {held - room} lane(s) go down (--force)")
    request_id = await _send(client, host_id, ControlAction.DRAIN)
    if not ctx.args.wait:
        if ctx.json:
            ctx.emit(
                {"host_id": host_id, "action": "drain", "request_id": request_id, "lanes": held}
            )
        else:
            ctx.say(
                f"Draining host {host_id}: {held} lane(s) move to other hosts one by one, each "
                f"between transactions. Follow with `multipair hosts`."
            )
        return ExitCode.OK
    ctx.note(f"Draining host {host_id}: {held} lane(s) to move...")
    deadline = time.monotonic() + ctx.args.timeout
    away = _AwayNotes(ctx)
    while True:
        counts = await away.read(_lease_counts(client))
        held = held if counts is None else counts.get(host_id, 0)
        if counts is not None and held == 0:
            break
        if time.monotonic() >= deadline:
            raise Fail(
                f"host {host_id} still holds {held} lane(s) after {ctx.args.timeout:g} s "
                "(lanes in long transactions, no room on the other hosts, or Redis away?)",
                ExitCode.UNKNOWN,
            )
        # Nothing to block on: leases are plain keys; poll them.
        await asyncio.sleep(_POLL_S)
    # A lane just released is unowned until another host takes it (a tick or
    # two): only lanes still unowned after a short grace are down.
    grace = time.monotonic() + _HANDOFF_GRACE_S
    while (down := await away.read(_unowned(client))) is None or down:
        if time.monotonic() >= grace and down is not None:
            break
        if time.monotonic() >= deadline:
            raise Fail(f"Redis stayed away for {ctx.args.timeout:g} s", ExitCode.UNKNOWN)
        await asyncio.sleep(_POLL_S)
    if ctx.json:
        ctx.emit(
            {
                "host_id": host_id,
                "action": "drain",
                "request_id": request_id,
                "lanes": 0,
                "lanes_down": down,
            }
        )
    elif down:
        ctx.say(
            f"Host {host_id} holds no lanes: it can be stopped now. {down} lane(s) are down: "
            "no host runs them (`multipair status --status down`)."
        )
    else:
        ctx.say(f"Host {host_id} holds no lanes: it can be stopped now.")
    return ExitCode.OK


class _AwayNotes:
    """Reads for a long wait that ride out Redis being away (a restart, a failover).

    The drain goes on meanwhile; the wait only stops looking for a moment. One
    note when Redis goes away and one when it is back, not one per poll.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._away = False

    async def read(self, call: Awaitable[T]) -> T | None:
        """``call``'s result, or None while Redis is away."""
        try:
            with redis_errors():
                result = await call
        except RetryLater as exc:
            if not self._away:
                self._ctx.note(f"Redis is away ({exc}); still waiting...")
            self._away = True
            return None
        if self._away:
            self._ctx.note("Redis is back.")
        self._away = False
        return result


def room_elsewhere(entries: list[HostEntry], host_id: str) -> int:
    """How many more lanes the live, accepting hosts other than ``host_id`` may take."""
    return sum(
        max(0, e.capacity - e.lanes)
        for e in entries
        if e.host_id != host_id and e.live(LIVE_WITHIN_S) and e.accepting and not e.draining
    )


async def _unowned(client: AsyncClient) -> int:
    """Enabled lanes no host holds a lease for."""
    redis, keys = client.redis, client.keys
    ids = sorted(as_text(raw) for raw in await redis.smembers(keys.lanes()))
    if not ids:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.exists(keys.lease(iid))
            pipe.hget(keys.profile(iid), "enabled")
        replies: list[Any] = await pipe.execute()
    leased, enabled = replies[::2], replies[1::2]
    return sum(
        1
        for held, flag in zip(leased, enabled, strict=True)
        if not held and flag is not None and as_text(flag) != "0"
    )


async def _accept(ctx: Context, client: AsyncClient) -> int:
    host_id = _host_id(ctx.args.host_id)
    await _known_host(client, host_id)
    request_id = await _send(client, host_id, ControlAction.ACCEPT)
    if ctx.json:
        ctx.emit({"host_id": host_id, "action": "accept", "request_id": request_id})
    else:
        ctx.say(f"Host {host_id} takes lanes again.")
    return ExitCode.OK
