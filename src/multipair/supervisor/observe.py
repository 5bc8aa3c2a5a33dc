"""What the supervisor's tick reads from Redis before it decides (issue 5, step 1 "observe").

One pipelined round trip: ``mp:lanes``, each profile's ``enabled``, every
relevant lease, the heartbeat, ``flow`` and ``status`` of the lanes running
here (and, with metrics, their whole state hash), and ``mp:hosts``; then,
for free lanes, whether their previous process heartbeated moments ago
(``decide`` rule 8). The result, :class:`Observed`, is what
:func:`~multipair.supervisor.decide.reconcile` is given; nothing here writes.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from multipair import broker_schema as bs
from multipair.exceptions import CommandError
from multipair.leases import Lease, parse_lease
from multipair.logs import get_logger
from multipair.redis_conn import as_text, text_map
from multipair.supervisor.decide import HostView, LaneRun
from multipair.supervisor.hosts import parse_host_entry
from multipair.supervisor.policy import RestartPolicy

__all__ = ["Observed", "Observer"]

log = get_logger("multipair.supervisor")


@dataclass(slots=True)
class Observed:
    """One tick's view of Redis."""

    desired: frozenset[str]
    leases: dict[str, Lease | None]
    heartbeats: dict[str, str | None]
    idle: frozenset[str] = frozenset()
    """Lanes of ours whose state hash says ``flow`` ``idle`` (between transactions)."""
    hosts: list[HostView] | None = None
    """``mp:hosts``; None when it could not be read."""
    warm: frozenset[str] = frozenset()
    """Free lanes whose previous process heartbeated moments ago (not started yet)."""
    statuses: dict[str, str | None] = field(default_factory=dict)
    """The ``status`` in the state hash of each live lane of ours."""
    lane_states: dict[str, dict[str, str]] | None = None
    """With metrics on: the whole state hash of each lane whose lease we hold (its counters)."""


class Observer:
    """Reads one :class:`Observed` per tick; remembers the bad ``mp:lanes`` members it logged."""

    def __init__(
        self, redis: Redis, keys: bs.Keys, policy: RestartPolicy, clock: Callable[[], float]
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.policy = policy
        self.clock = clock
        self._bad_ids: set[str] = set()

    async def observe(
        self, runs: Mapping[str, LaneRun], *, counters: bool, back_at: float | None
    ) -> Observed:
        """The view for this tick; ``counters``: read held lanes' whole state hashes (metrics).

        ``back_at`` is when Redis last came back after an outage (None: never).
        """
        keys = self.keys
        ids: list[str] = []
        for raw in await self.redis.smembers(keys.lanes()):
            text = as_text(raw)
            try:
                ids.append(bs.validate_instance_id(text))
            except CommandError:
                if text not in self._bad_ids:
                    self._bad_ids.add(text)
                    log.error("mp:lanes names something that is not a lane id", member=text[:80])
        watched = sorted(set(ids) | set(runs))
        alive = sorted(iid for iid, run in runs.items() if run.alive)
        # With metrics: every held lane's whole state hash, for the counters its lane keeps.
        counted = (
            sorted(iid for iid, run in runs.items() if run.lease is not None) if counters else []
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid in ids:
                # pos_id is in every profile: None means the profile is gone.
                pipe.hmget(keys.profile(iid), ["enabled", "pos_id"])
            for iid in watched:
                pipe.get(keys.lease(iid))
            for iid in alive:
                pipe.hmget(keys.state(iid), ["heartbeat_at", "flow", "status"])
            for iid in counted:
                pipe.hgetall(keys.state(iid))
            pipe.hgetall(keys.hosts())
            replies: list[Any] = await pipe.execute()
        now_wall = _dt.datetime.now(_dt.UTC)
        host_replies: dict[Any, Any] = replies.pop()
        profiles, rest = replies[: len(ids)], replies[len(ids) :]
        lease_replies, rest = rest[: len(watched)], rest[len(watched) :]
        states, full_states = rest[: len(alive)], rest[len(alive) :]
        desired = frozenset(
            iid
            for iid, (enabled, pos_id) in zip(ids, profiles, strict=True)
            if pos_id is not None and enabled not in (b"0", "0")
        )
        leases = {iid: parse_lease(raw) for iid, raw in zip(watched, lease_replies, strict=True)}
        free = sorted(iid for iid in desired - runs.keys() if leases.get(iid) is None)
        return Observed(
            desired=desired,
            leases=leases,
            warm=await self._warm(free, now_wall, back_at) if free else frozenset(),
            heartbeats={
                iid: None if beat is None else as_text(beat)
                for iid, (beat, _, _) in zip(alive, states, strict=True)
            },
            idle=frozenset(
                iid
                for iid, (_, flow, _) in zip(alive, states, strict=True)
                if flow is not None and as_text(flow) == "idle"
            ),
            statuses={
                iid: None if status is None else as_text(status)
                for iid, (_, _, status) in zip(alive, states, strict=True)
            },
            lane_states=(
                {iid: text_map(raw) for iid, raw in zip(counted, full_states, strict=True)}
                if counters
                else None
            ),
            hosts=[
                parse_host_entry(as_text(host), raw, now_wall).view()
                for host, raw in host_replies.items()
            ],
        )

    async def _warm(
        self, free: list[str], now_wall: _dt.datetime, back_at: float | None
    ) -> frozenset[str]:
        """Free lanes whose last process may still be alive (``decide`` rule 8)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid in free:
                pipe.hmget(self.keys.state(iid), ["heartbeat_at", "pid"])
            replies: list[Any] = await pipe.execute()
        warm = set()
        # Just back from an outage: every lane's heartbeat is as old as the
        # outage, and their owners are taking their leases back right now.
        after_outage = back_at is not None and self.clock() - back_at < self.policy.lease_ttl_s
        for iid, (beat, pid) in zip(free, replies, strict=True):
            if beat is None or not pid:
                continue  # never ran, or its owner saw it exit (pid cleared)
            if after_outage:
                warm.add(iid)
                continue
            try:
                age = (now_wall - bs.parse_time(as_text(beat))).total_seconds()
            except CommandError:
                continue
            if age < self.policy.takeover_quiet_s:
                warm.add(iid)
        if warm:
            log.info("lanes freed unreleased: waiting for their old process", lanes=sorted(warm))
        return frozenset(warm)
