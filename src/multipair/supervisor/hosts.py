"""The supervisors as ``mp:hosts`` shows them (issue 7): read by every host and by the CLI.

``mp:hosts`` is a hash: host id -> JSON written by that host's supervisor
every ``heartbeat_every_s`` (2 s)::

    {"heartbeat_at": "2025-01-31T09:30:00.250Z", "started_at": "...", "pid": 4242,
     "lanes": 10, "capacity": 100, "accepting": true, "draining": false,
     "template_pid": 4243, "metrics_port": 9464}

A supervisor removes its entry when it stops cleanly; a killed one leaves
it behind, ageing. A host counts as *live* while its heartbeat is younger
than ``RestartPolicy.host_live_s`` (5 s): only live, accepting hosts get a
share of the lanes. Ages are computed on the reader's wall clock, so the
hosts' clocks must agree to well under a second (NTP).
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, ConfigurationError
from multipair.leases import RELEASE_IF_HELD_LUA
from multipair.logs import get_logger
from multipair.redis_conn import as_text
from multipair.supervisor.decide import HostView

__all__ = ["HostClaim", "HostEntry", "parse_host_entry", "read_hosts"]

log = get_logger("multipair.supervisor")


# KEYS: claim. ARGV: our value, TTL ms. 1 renewed, 2 taken again (it had
# lapsed: this host was cut off from Redis for a TTL), 0 held by another.
_KEEP_CLAIM: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""


class HostClaim:
    """One running supervisor per host id (``mp:host:{HOST}:claim``).

    Two supervisors sharing a host id would each take the other's leases for
    an earlier run of its own, release them and start the lanes again: lanes
    killed and restarted in turn for as long as both run. So a supervisor
    claims its host id before it starts anything (``SET NX`` with a TTL),
    renews the claim with its heartbeat, and gives it back when it stops; a
    second one started with the same id refuses to run and says who holds
    it. A killed supervisor's claim lapses after ``ttl_ms``.
    """

    def __init__(self, redis: Redis, keys: bs.Keys, host_id: str, *, ttl_ms: int) -> None:
        self.redis = redis
        self.key = keys.host_claim(host_id)
        self.host_id = host_id
        self.ttl_ms = ttl_ms
        self.value = f"{secrets.token_hex(8)} pid {os.getpid()} on {socket.gethostname()}"
        self._keep = redis.register_script(_KEEP_CLAIM)
        self._release = redis.register_script(RELEASE_IF_HELD_LUA)

    async def take(self) -> None:
        """Claim the host id, or raise :class:`ConfigurationError` naming the holder."""
        if await self.redis.set(self.key, self.value, nx=True, px=self.ttl_ms):
            return
        holder = await self.redis.get(self.key)
        raise ConfigurationError(
            f"another supervisor runs as host {self.host_id!r} "
            f"({as_text(holder) if holder is not None else 'it just stopped; try again'}); "
            f"give this one its own --host-id, or stop that one first "
            f"(a killed supervisor's claim lapses after {self.ttl_ms / 1000:g} s)"
        )

    async def renew(self) -> bool:
        """Extend the claim; False: another supervisor holds this host id now.

        A claim that lapsed while nobody took it (Redis unreachable for a
        TTL; the lanes rode that out, their leases are taken back the same
        way) is taken again, so a Redis outage does not stop the supervisor.
        """
        kept = int(await self._keep(keys=[self.key], args=[self.value, self.ttl_ms]))
        if kept == 2:
            log.warning("host claim had lapsed; taken again", host=self.host_id)
        return kept != 0

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.value])


@dataclass(frozen=True, slots=True, kw_only=True)
class HostEntry:
    """One host's heartbeat entry, decoded; ``age_s`` is None when it has no valid time."""

    host_id: str
    heartbeat_at: str | None
    age_s: float | None
    capacity: int
    lanes: int
    accepting: bool
    draining: bool
    pid: int | None
    started_at: str | None
    template_pid: int | None
    metrics_port: int | None = None
    """Where the host serves ``/metrics`` (``--metrics-port``); None: it does not."""

    def view(self) -> HostView:
        """What the balancer needs (an entry without a heartbeat time is infinitely old)."""
        return HostView(
            host_id=self.host_id,
            capacity=self.capacity,
            lanes=self.lanes,
            accepting=self.accepting,
            age_s=float("inf") if self.age_s is None else self.age_s,
        )

    def live(self, live_within_s: float) -> bool:
        return self.age_s is not None and self.age_s < live_within_s


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_host_entry(host_id: str, raw: Any, now: _dt.datetime) -> HostEntry:
    """Decode one ``mp:hosts`` value; damaged fields read as unknown, never raise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        body = {}
    heartbeat = body.get("heartbeat_at")
    age: float | None = None
    if isinstance(heartbeat, str):
        try:
            age = max((now - bs.parse_time(heartbeat)).total_seconds(), 0.0)
        except CommandError:
            heartbeat = None
    else:
        heartbeat = None
    started = body.get("started_at")
    pid, template = body.get("pid"), body.get("template_pid")
    metrics = body.get("metrics_port")
    return HostEntry(
        host_id=host_id,
        heartbeat_at=heartbeat,
        age_s=age,
        capacity=_int(body.get("capacity"), 0),
        lanes=_int(body.get("lanes"), 0),
        accepting=body.get("accepting") is not False,
        draining=body.get("draining") is True,
        pid=pid if isinstance(pid, int) else None,
        started_at=started if isinstance(started, str) else None,
        template_pid=template if isinstance(template, int) else None,
        metrics_port=metrics
        if isinstance(metrics, int) and not isinstance(metrics, bool)
        else None,
    )


async def read_hosts(redis: Redis, keys: bs.Keys) -> list[HostEntry]:
    """Every entry of ``mp:hosts``, by host id."""
    raw: dict[Any, Any] = await redis.hgetall(keys.hosts())
    now = _dt.datetime.now(_dt.UTC)
    return sorted(
        (parse_host_entry(as_text(k), v, now) for k, v in raw.items()), key=lambda e: e.host_id
    )
