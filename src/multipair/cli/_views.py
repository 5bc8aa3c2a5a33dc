"""Finding a lane from what an operator typed, checking it can work, and showing it.

Shared by ``lane``, ``tx``, ``status`` and ``events``. JSON views never hold
a secret: a :class:`~multipair.store.profiles.LaneProfile` has none (the
sealed keys stay in Redis), and only its fields are shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
from collections.abc import Iterable
from typing import Any, Final

from multipair.broker_schema import format_time, validate_instance_id
from multipair.cli._base import Context, Fail
from multipair.client import AsyncClient, LaneInfo
from multipair.exceptions import CommandError
from multipair.redis_conn import as_text, redis_errors
from multipair.store.profiles import LaneProfile, PayAtTableConfig

__all__ = [
    "LANE_ALIVE_S",
    "check_ready",
    "crash_loop_text",
    "info_json",
    "is_running",
    "lane_status",
    "last_exits",
    "profile_json",
    "ready_lane",
    "resolve_lane",
    "uptime_seconds",
]

LANE_ALIVE_S: Final = 10.0
"""A lane with no lease and a heartbeat older than this is not running (it beats every 2 s)."""

_MIN_PREFIX: Final = 4
_FULL_ID_CHARS: Final = 36


async def resolve_lane(client: AsyncClient, text: str) -> str:
    """The instance id an ``ID`` argument names: a full UUID, or a unique start of one.

    A full id is returned as typed (the command that uses it reports an
    unknown lane); a shorter one is matched against the existing lanes.
    """
    if len(text) == _FULL_ID_CHARS:
        try:
            return validate_instance_id(text)
        except CommandError as exc:
            raise Fail(exc.detail) from None
    if len(text.replace("-", "")) < _MIN_PREFIX:
        raise Fail(f"lane id {text!r} is too short: give at least {_MIN_PREFIX} characters")
    matches = [p.instance_id for p in await client.list_lanes() if p.instance_id.startswith(text)]
    if not matches:
        raise Fail(f"lane {text}… not found")
    if len(matches) > 1:
        raise Fail(f"lane id {text!r} matches {len(matches)} lanes: {', '.join(matches)}")
    return matches[0]


def is_running(info: LaneInfo, now: _dt.datetime | None = None) -> bool:
    """A host holds the lane's lease, or its process beat recently.

    A lane in crash loop keeps its lease while it is down between slow
    retries, so for it only a live process counts: a pid, and a heartbeat
    that is recent and newer than the process's start. Without a lease, a
    lane whose supervisor saw it exit (``pid`` cleared: ``lane stop``, a
    drain) is not running, however recent its last heartbeat.
    """
    if info.lease_host is not None and not info.crash_loop:
        return True
    if info.heartbeat_at is None or info.pid is None:
        return False
    if info.crash_loop and info.started_at is not None and info.heartbeat_at < info.started_at:
        return False
    now = now if now is not None else _dt.datetime.now(_dt.UTC)
    return (now - info.heartbeat_at).total_seconds() < LANE_ALIVE_S


def lane_status(
    info: LaneInfo, now: _dt.datetime | None = None, last_exit: str | None = None
) -> str:
    """The one word ``status`` and ``lane show`` give a lane.

    What the lane last reported while it runs; ``stopping`` while a stopped
    (``enabled`` no) lane still drains; ``stopped`` or ``down`` once no
    process runs it; ``crash_loop (LAST EXIT)`` in crash loop.
    """
    if info.crash_loop:
        return crash_loop_text(last_exit)
    if is_running(info, now):
        return (info.status or "starting") if info.profile.enabled else "stopping"
    return "stopped" if not info.profile.enabled else "down"


def crash_loop_text(last_exit: str | None) -> str:
    """``crash_loop (exit code 2)``: the status of a crash-looping lane, with its last exit."""
    return f"crash_loop ({last_exit})" if last_exit else "crash_loop"


async def last_exits(client: AsyncClient, instance_ids: Iterable[str]) -> dict[str, str | None]:
    """``last_exit`` of each lane's state hash (``exit code 1``, ``signal 9 (SIGKILL)``), as
    the supervisor wrote it; ``None`` when it never did."""
    ids = list(instance_ids)
    with redis_errors():
        raw = await asyncio.gather(
            *(client.redis.hget(client.keys.state(iid), "last_exit") for iid in ids)
        )
    return {
        iid: (as_text(v) or None) if v is not None else None
        for iid, v in zip(ids, raw, strict=True)
    }


HOST_PICKUP_S: Final = 10.0
"""How long a command waits for a live host to start a lane nobody runs yet (``lane add``
and at once ``lane pair``: the host takes it within a decision loop or two)."""
_PICKUP_POLL_S: Final = 0.25


async def ready_lane(
    ctx: Context, client: AsyncClient, iid: str, *, need_paired: bool = True
) -> LaneInfo:
    """The lane's info once it can take a command; :class:`Fail` with the next step if not.

    An enabled lane no host runs yet (just added, or just started), while a
    live host takes lanes, is waited for, up to :data:`HOST_PICKUP_S`, with
    one progress line: a script's ``lane add`` then ``lane pair`` works.
    """
    info = await client.lane_info(iid)
    idle_lane = not is_running(info) and info.profile.enabled and not info.crash_loop
    if idle_lane and await _a_host_takes_lanes(client):
        ctx.note(f"waiting for a host to start lane {iid} (up to {HOST_PICKUP_S:g} s)…")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOST_PICKUP_S
        while not is_running(info) and loop.time() < deadline:
            # Nothing to block on: the lease is a plain key a host sets.
            await asyncio.sleep(_PICKUP_POLL_S)
            info = await client.lane_info(iid)
    check_ready(info, need_paired=need_paired)
    return info


async def _a_host_takes_lanes(client: AsyncClient) -> bool:
    """Whether some host is live, accepting lanes and has room for one more."""
    from multipair.supervisor.hosts import read_hosts
    from multipair.supervisor.policy import RestartPolicy

    live_within = RestartPolicy().host_live_s
    with redis_errors():
        entries = await read_hosts(client.redis, client.keys)
    return any(
        e.live(live_within) and e.accepting and not e.draining and e.lanes < e.capacity
        for e in entries
    )


def check_ready(info: LaneInfo, *, need_paired: bool = True) -> None:
    """Refuse, with the operator's next step, a lane that cannot take a command now."""
    iid = info.instance_id
    if not info.profile.enabled:
        raise Fail(f"lane stopped: {iid} is stopped; start it with `multipair lane start {iid}`")
    if info.crash_loop and not is_running(info):
        raise Fail(
            f"lane crash-looping: {iid} keeps exiting and is only retried slowly; "
            f"see `multipair lane show {iid}` and the owning host's log"
        )
    if not is_running(info):
        since = (
            f"; last heartbeat {info.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
            if info.heartbeat_at is not None
            else ""
        )
        raise Fail(f"lane not running: no host runs {iid} (is `multipair supervise` up?{since})")
    if need_paired and info.status == "unpaired":
        raise Fail(f"lane not paired: pair {iid} first with `multipair lane pair {iid}`")


def profile_json(profile: LaneProfile) -> dict[str, Any]:
    """Every profile field (there are no secrets among them)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(profile):
        value = getattr(profile, f.name)
        if isinstance(value, _dt.datetime):
            value = format_time(value)
        elif isinstance(value, PayAtTableConfig):
            value = dataclasses.asdict(value)
        out[f.name] = value
    return out


def uptime_seconds(info: LaneInfo, now: _dt.datetime | None = None) -> float | None:
    """Seconds since the lane process started, while it runs."""
    if info.started_at is None or not is_running(info, now):
        return None
    now = now if now is not None else _dt.datetime.now(_dt.UTC)
    return max(0.0, (now - info.started_at).total_seconds())


def info_json(
    info: LaneInfo, now: _dt.datetime | None = None, *, last_exit: str | None = None
) -> dict[str, Any]:
    """One lane as ``status --json`` and ``lane show --json`` print it.

    ``running`` is false for a lane in crash loop while its process is down
    (see :func:`is_running`); ``last_exit`` is the supervisor's note of the
    lane process's last exit.
    """

    def when(moment: _dt.datetime | None) -> str | None:
        return format_time(moment) if moment is not None else None

    profile = info.profile
    return {
        "instance_id": profile.instance_id,
        "pos_id": profile.pos_id,
        "serial_number": profile.serial_number,
        "enabled": profile.enabled,
        "running": is_running(info, now),
        "status": info.status,
        "flow": info.flow,
        "host": info.host,
        "pid": info.pid,
        "owner": info.lease_host,
        "heartbeat_at": when(info.heartbeat_at),
        "started_at": when(info.started_at),
        "uptime_s": uptime_seconds(info, now),
        "restarts": info.restarts,
        "crash_loop": info.crash_loop,
        "last_exit": last_exit,
        "last_exit_cause": info.last_exit_cause,
        "last_error": info.last_error,
        "last_pos_ref_id": info.last_pos_ref_id,
        "last_result": info.last_result,
    }
