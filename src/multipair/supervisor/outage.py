"""Riding out a Redis outage on the supervisor's side (issue 13, "Cut off from Redis").

Every Redis call the host makes is bounded by :data:`REDIS_CALL_S`. While
its calls fail because Redis is away (refused, reset, timed out, loading:
:func:`is_away`), the lanes ride the outage out: they keep their terminals
and wait for Redis themselves, and the host judges neither their heartbeats
(it could not have seen one: :func:`excuse_heartbeats` gives each lane
``heartbeat_timeout_s`` afresh from when Redis answers again) nor their
unrenewed leases, for up to ``policy.redis_ride_out_s``.
:class:`RedisOutage` remembers when the outage began and when Redis came
back; the host's tick, lease keeping and the pure plan
(:func:`~multipair.supervisor.decide.reconcile`, ``redis_away_since``) read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

from multipair.logs import get_logger
from multipair.supervisor.decide import LaneRun
from multipair.supervisor.policy import RestartPolicy
from multipair.worker.retry import is_redis_away

__all__ = ["REDIS_CALL_S", "RedisOutage", "excuse_heartbeats", "is_away"]

log = get_logger("multipair.supervisor")

REDIS_CALL_S: Final = 2.0
"""Bound on one Redis round trip of the host (a dead link must not stall the loop)."""


def is_away(exc: BaseException) -> bool:
    """Redis cannot serve now (unreachable, timed out, loading): not an answer."""
    return isinstance(exc, TimeoutError | ConnectionError) or is_redis_away(exc)


def excuse_heartbeats(runs: dict[str, LaneRun], now: float) -> None:
    """While Redis is away, and as it comes back, no lane has missed a heartbeat.

    A heartbeat this host could not have seen is not missed: each live
    lane's clock starts again now, so it is judged ``heartbeat_timeout_s``
    (or ``start_timeout_s`` before its first) after Redis answers again.
    """
    for iid, run in list(runs.items()):
        if not run.alive:
            continue
        started = run.started_at if run.started_at is not None else now
        if run.heartbeat_at is not None and run.heartbeat_at >= started:
            runs[iid] = dataclasses.replace(run, heartbeat_at=now)
        else:
            runs[iid] = dataclasses.replace(run, started_at=now)


class RedisOutage:
    """When this host's Redis calls started failing, and when Redis last answered again."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.away_since: float | None = None
        """When this host's Redis calls started failing (Redis away); None while it answers."""
        self.back_at: float | None = None
        """When Redis last answered again after being away."""
        self.primary: str | None = None
        """The identity of the Redis primary last seen (``store.durable.primary_identity``)."""
        self.failovers = 0
        """How often the primary was found changed after an outage."""

    def note_primary(self, identity: str) -> bool:
        """The primary answering after an outage; True (and logged) when it is a new one.

        A new primary may have lost the latest writes: the host has just
        taken back its leases (restoring a fence that lost its token, see
        ``LeaseManager.keep_many``); each lane re-reads its own records
        (``worker.failover``).
        """
        before, self.primary = self.primary, identity
        if before is None or before == identity:
            return False
        self.failovers += 1
        log.warning("a new Redis primary: leases re-checked", before=before, now=identity)
        return True

    def away(self, now: float, lanes: int) -> None:
        """A call found Redis away: the outage starts now unless it already had."""
        if self.away_since is None:
            self.away_since = now
            log.warning(
                "Redis away: lanes ride it out",
                lanes=lanes,
                ride_out_s=self.policy.redis_ride_out_s,
            )

    def answered(self, runs: dict[str, LaneRun]) -> None:
        """Redis answered: if it was away, it is back, and heartbeats are judged afresh."""
        since = self.away_since
        if since is None:
            return
        now = self.clock()
        self.away_since = None
        self.back_at = now
        excuse_heartbeats(runs, now)
        log.warning("Redis back", away_s=round(now - since, 3), lanes=len(runs))
