"""The supervisor's I/O loop: one host running its share of the lanes (issue 5, fits issue 7).

Every ``tick_s`` — stretched on big fleets, up to 2 s at 1,000 lanes
(:func:`~multipair.supervisor.policy.tick_period`) — and at once when a lane
exits, an ops message arrives or a signal comes, the host

1. **observes**: ``mp:lanes``, each profile's ``enabled``, every relevant
   lease, the heartbeats of its running lanes;
2. **decides** with :func:`~multipair.supervisor.decide.reconcile` (pure);
3. **acts**: takes a lease then spawns (the lane gets the lease's fencing
   token), sends SIGTERM or SIGKILL, releases leases.

Beside that loop, in the same ``TaskGroup``: lease renewal every
``renew_every_s`` (a renewal refused means the lease is gone: SIGKILL the
lane at once and publish ``lane_stopped`` "lease lost"), the lease watchdog,
the host heartbeat in ``mp:hosts`` and the ops control stream
(:mod:`multipair.supervisor.control`).

Metrics (issue 15, :mod:`multipair.supervisor.metrics`), with
``config.metrics``: ``/metrics`` is served in this loop; each tick also
reads the whole state hash of every lane held (the counters its lane keeps
in it) and sets lanes by status and their memory; restarts, Redis errors
and renewal times are counted where they happen.

Several hosts (issue 7): each tick also reads ``mp:hosts`` and the ``flow``
of its lanes; :func:`~multipair.supervisor.decide.balance` gives this host's
fair share and the room the other live hosts have, and ``reconcile`` sheds
lanes that are between transactions to them (SIGTERM, release once exited),
or all of them one by one after an ops ``drain``.

Rules this module keeps:

- Only the tick loop spawns, records pids and handles exits, so a lane's
  record is never written by two tasks about the same event; the renewal
  task changes only lease fields, re-reading the record after each await.
- A lane is started only under a lease just taken (or still held and
  renewed); a lease left by an earlier run of this host is released and
  taken afresh, so anything still holding the old token is fenced off.
- What the supervisor writes about a lane (its ``lane_*`` events, ``host``,
  ``pid``, ``restarts``, ``crash_loop``) is fenced by the lease's token, like
  the lane's own writes. The ``lease lost`` report is written only while the
  lease is still ours or held by nobody: once another host owns the lane,
  nothing from this one lands in its streams.
- **Cut off from Redis** (issue 13). Every Redis call the host makes is
  bounded by a timeout. While its calls fail because Redis is away
  (refused, reset, timed out, loading), the lanes ride the outage out: they
  keep their terminals and wait for Redis themselves, and the host judges
  neither their heartbeats (it could not have seen one; each lane gets
  ``heartbeat_timeout_s`` afresh from when Redis answers again) nor their
  unrenewed leases, for up to ``policy.redis_ride_out_s``. When Redis
  answers again the host first takes its leases back
  (:meth:`~multipair.leases.LeaseManager.keep_many`: a lease that lapsed is
  set again to the same token only if the fence still holds that token,
  i.e. nobody took the lane meanwhile), and only then looks at them; a lane
  whose lease moved on is killed at once (fencing holds). For
  ``lease_ttl_s`` after an outage it starts no free lane whose state names a
  process: that lane's owner is taking its lease back. Past the ride-out
  bound a watchdog that needs no Redis (local clock, local socket to the
  template) SIGKILLs each lane, as it does ``lease_margin_s`` before an
  unrenewed lease can expire when Redis is not away (a frozen host): a
  host cut off from a Redis that other hosts still reach lets go of its
  terminals.
- SIGTERM or SIGINT: take no more lanes, SIGTERM every lane (they drain
  their in-flight transaction), keep renewing their leases meanwhile, SIGKILL
  any lane still alive after the drain bound plus a margin, release each
  lease as its lane exits, leave ``mp:hosts``, return. A second signal: SIGKILL
  every lane now, release the leases, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import os
import random
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import CommandError, ConfigurationError, MultipairError, RetryLater
from multipair.leases import (
    Lease,
    LeaseKept,
    LeaseManager,
    fenced,
    is_fenced_error,
    parse_lease,
)
from multipair.logs import get_logger
from multipair.redis_conn import as_text, connect_blocking, text_map
from multipair.store.meta import check_master_key
from multipair.store.profiles import ProfileStore
from multipair.supervisor.control import (
    CONTROL_GROUP,
    CONTROL_MAXLEN,
    MAX_AGE_S,
    ControlAction,
    ControlMessage,
    decode_control,
    peek_requested_by,
)
from multipair.supervisor.decide import (
    Action,
    Balance,
    HostView,
    Kill,
    LaneRun,
    Release,
    Restart,
    Shed,
    Signalled,
    Start,
    Stop,
    StopReason,
    balance,
    reconcile,
)
from multipair.supervisor.hosts import HostClaim, parse_host_entry
from multipair.supervisor.metrics import (
    HostMetrics,
    MetricsConfig,
    MetricsServer,
    RestartReason,
    lane_status,
)
from multipair.supervisor.policy import (
    ExitHistory,
    RestartPolicy,
    after_running,
    lease_deadline,
    record_exit,
    tick_period,
)
from multipair.supervisor.procs import EXIT_LEASE_LOST, LaneExit, LaneProcesses, rss_bytes
from multipair.worker.logship import LOG_STREAM_MAXLEN
from multipair.worker.retry import is_redis_away

__all__ = ["DEFAULT_CAPACITY", "Host", "HostConfig"]

log = get_logger("multipair.supervisor")

DEFAULT_CAPACITY: Final = 100
"""Lanes one host runs at most unless ``--capacity`` says otherwise."""

_IMMEDIATE_STOP_WAIT_S: Final = 5.0
_CONTROL_BLOCK_MS: Final = 1000
_REDIS_RETRY_S: Final = 1.0
_REDIS_CALL_S: Final = 2.0
"""Bound on one Redis round trip of the host (a dead link must not stall the loop)."""
_REDIS_CONNECTIONS: Final = 16
"""The supervisor's pool: tick, renewals, heartbeat, control read and reports, with room."""
_WATCH_EVERY_S: Final = 0.1
"""How often the lease watchdog looks at the clock."""

# Not fenced but guarded: written while the lease is still ours (token ARGV[1])
# or free, never once another host holds the lane. KEYS: lease, events.
# ARGV: token, maxlen, v, body.
_LEASE_LOST_REPORT: Final = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^(%d+):') ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'v', ARGV[3], 'body', ARGV[4])
return 1
"""

# Fenced (multipair.leases.fenced): called with the lease key and token prepended.
# KEYS: events, state. ARGV: maxlen, v, body, then state field/value pairs.
_PUBLISH_FENCED: Final = fenced(
    """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[2], 'body', ARGV[3])
if #ARGV > 3 then redis.call('HSET', KEYS[2], unpack(ARGV, 4)) end
return 1
"""
)

# Fenced. KEYS: state. ARGV: field/value pairs.
_STATE_FENCED: Final = fenced(
    """
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """How one supervisor runs; every number of the restart rules is in ``policy``."""

    host_id: str
    capacity: int = DEFAULT_CAPACITY
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    tick_s: float = 0.5
    heartbeat_every_s: float = 2.0
    metrics: MetricsConfig | None = None
    """Serve Prometheus metrics (``--metrics-port``); None: off."""

    def __post_init__(self) -> None:
        bs.validate_host_id(self.host_id)
        if self.capacity < 0:
            raise ConfigurationError("capacity must be 0 or more")


@dataclass(slots=True)
class _Observed:
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


def _iso_now() -> str:
    return bs.format_time(_dt.datetime.now(_dt.UTC))


def _away(exc: BaseException) -> bool:
    """Redis cannot serve now (unreachable, timed out, loading): not an answer."""
    return isinstance(exc, TimeoutError | ConnectionError) or is_redis_away(exc)


class Host:
    """Run this host's lanes until :meth:`request_stop` (SIGTERM/SIGINT) completes."""

    def __init__(
        self,
        settings: Settings,
        config: HostConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if settings.redis_url is None:
            raise ConfigurationError("no Redis: set MULTIPAIR_REDIS_URL or pass --redis-url")
        self.settings = settings
        self.config = config
        self.policy = config.policy
        self.host_id = config.host_id
        self.clock = clock
        self.rng = rng
        self.keys = bs.Keys(settings.prefix)
        # Server or any cluster node; a few connections serve every lane (renewals are pipelined).
        self.redis: Redis = connect_blocking(settings.redis_url, max_connections=_REDIS_CONNECTIONS)
        self.leases = LeaseManager(
            self.redis, self.keys, self.host_id, ttl_ms=round(self.policy.lease_ttl_s * 1000)
        )
        self.profiles = ProfileStore(self.redis, self.keys)
        self.claim = HostClaim(
            self.redis, self.keys, self.host_id, ttl_ms=round(self.policy.lease_ttl_s * 1000)
        )
        self.procs = LaneProcesses(settings, on_exit=self._wake_up)
        self.runs: dict[str, LaneRun] = {}
        self._pids: dict[int, str] = {}
        self._heartbeat_raw: dict[str, str] = {}
        self._desired: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._accepting = True
        self._immediate = False
        self._closing = False
        self._claim_lost = False
        """Set when the tick loop has ended: the helper loops end too."""
        self._draining_since: float | None = None
        """When ops asked this host to drain (``drain`` control message); None: not draining."""
        self._publish = self.redis.register_script(_PUBLISH_FENCED)
        self._state = self.redis.register_script(_STATE_FENCED)
        self._lease_lost_report = self.redis.register_script(_LEASE_LOST_REPORT)
        self._bad_ids: set[str] = set()
        self._redis_away_since: float | None = None
        """When this host's Redis calls started failing (Redis away); None while it answers."""
        self._redis_back_at: float | None = None
        """When Redis last answered again after being away."""
        self.metrics: HostMetrics | None = None
        """Prometheus series (issue 15), with ``config.metrics``; served by ``_metrics_server``."""
        self._metrics_server: MetricsServer | None = None
        self._lane_status: dict[str, str | None] = {}
        """The last ``status`` read from each live lane's state hash (for ``multipair_lanes``)."""
        if config.metrics is not None:
            self.metrics = HostMetrics(self.host_id, per_lane=config.metrics.per_lane)
            self._metrics_server = MetricsServer(self.metrics, config.metrics)

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on, once it is; None without metrics."""
        return None if self._metrics_server is None else self._metrics_server.port

    # ------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: stop at once."""
        if self._accepting:
            self._accepting = False
            log.info("supervisor stopping: lanes drain", host=self.host_id, lanes=len(self.runs))
        else:
            self._immediate = True
            log.warning("supervisor stopping now: lanes killed", host=self.host_id)
        self._wake_up()

    async def run(self) -> None:
        """Serve until stopped; leases released and ``mp:hosts`` left on the way out."""
        try:
            await self._serve_metrics()
            await self.redis.ping()
            if self.settings.master_key is not None:
                # A host with another key would crash-loop every lane it takes: refuse.
                await check_master_key(self.redis, self.keys, self.settings.master_key)
            await self.claim.take()  # refuses to run beside a supervisor with our host id
            await self._ensure_control_group()
        except BaseException:
            await self._close_metrics()
            await self.redis.aclose()
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            async with self.procs:
                log.info(
                    "supervisor started",
                    host=self.host_id,
                    capacity=self.config.capacity,
                    template_pid=self.procs.template_pid,
                )
                async with asyncio.TaskGroup() as tasks:
                    helpers = [
                        tasks.create_task(self._renew_loop(), name="renew"),
                        tasks.create_task(self._lease_watch_loop(), name="lease-watch"),
                        tasks.create_task(self._heartbeat_loop(), name="host-heartbeat"),
                        tasks.create_task(self._control_loop(), name="control"),
                    ]
                    try:
                        await self._tick_loop()
                    finally:
                        # Cancel, and also tell: on Python 3.11 a cancellation can
                        # be absorbed inside a library call (seen in redis-py's
                        # blocking read under load), and the task group would then
                        # wait for ever. Each helper loop checks the flag, so it
                        # ends within one pass (the control read blocks 1 s).
                        self._closing = True
                        for task in helpers:
                            task.cancel()
        finally:
            # Every lane is dead by now (leaving ``self.procs`` kills stragglers):
            # give their leases back so another host can take them at once.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._release_all()
            with contextlib.suppress(RedisError, OSError):
                await self.redis.hdel(self.keys.hosts(), self.host_id)
                await self.claim.release()
            await self.redis.aclose()
            await self._close_metrics()
            log.info("supervisor stopped", host=self.host_id)
        if self._claim_lost:  # exit 2: a configuration error for ops, not a clean stop
            raise ConfigurationError(
                f"another supervisor took host id {self.host_id!r}: this one stopped; "
                "give each supervisor its own --host-id"
            )

    def _wake_up(self) -> None:
        self._wake.set()

    async def _serve_metrics(self) -> None:
        """Listen on ``--metrics-port``; a port that cannot be had is a configuration error."""
        server, config = self._metrics_server, self.config.metrics
        if server is None or config is None:
            return
        try:
            await server.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {config.bind}:{config.port}: {exc.strerror or exc}; "
                "choose another --metrics-port"
            ) from None

    async def _close_metrics(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.close()

    def _redis_error(self) -> None:
        """One Redis call of this host failed (``multipair_redis_errors_total``)."""
        if self.metrics is not None:
            self.metrics.redis_error()

    # ------------------------------------------------------------------
    # The tick: observe, decide, act
    # ------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            self._wake.clear()
            if self._immediate:
                await self._stop_now()
                return
            await self._tick()
            if not self._accepting and not self.runs:
                return
            # asyncio.timeout, not wait_for, which on 3.11 can swallow a
            # cancellation arriving as the event is set (gh-86296).
            period = tick_period(self.config.tick_s, len(self._desired | self.runs.keys()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._wake.wait()

    async def _tick(self) -> None:
        await self._handle_exits()
        now = self.clock()
        try:
            async with asyncio.timeout(_REDIS_CALL_S):
                if self._redis_away_since is not None:
                    # Back from an outage? Leases that lapsed meanwhile are taken
                    # back first, or lost for good, before anything looks at them.
                    await self._keep_leases()
                observed = await self._observe()
            self._desired = observed.desired
            self._redis_answered()
        except (RedisError, OSError, RetryLater) as exc:
            self._redis_error()
            # Cannot see Redis: decide on what we last knew. The lease expiry
            # rule (and the watchdog) still kill lanes whose leases could not
            # be renewed, past the ride-out bound when Redis is away.
            if self._redis_away_since is None or not _away(exc):  # once per outage
                log.warning(
                    "cannot read Redis; deciding on the last view", error=str(exc) or repr(exc)
                )
            if _away(exc):
                self._redis_away(now)
            observed = _Observed(
                desired=self._desired,
                leases={iid: run.lease for iid, run in self.runs.items()},
                heartbeats={},
            )
        if self._redis_away_since is not None:
            self._excuse_heartbeats(now)
        self._note_heartbeats(observed.heartbeats, now)
        await self._forgive_stable(now)
        rss = self._lane_memory()
        self._note_metrics(observed, rss)
        share = self._balance(observed)
        actions = reconcile(
            observed.desired,
            self.runs,
            observed.leases,
            now,
            host_id=self.host_id,
            capacity=self.config.capacity,
            policy=self.policy,
            accepting=self._accepting,
            fair_share=share.fair_share,
            room_elsewhere=share.room_elsewhere,
            idle=observed.idle,
            draining_since=self._draining_since,
            warm=observed.warm,
            rss=rss,
            memory_max=self.settings.lane_memory_max,
            redis_away_since=self._redis_away_since,
        )
        for action in actions:
            try:
                await self._act(action, observed.leases)
            except (RedisError, OSError, RetryLater) as exc:
                self._redis_error()
                log.warning("action failed; retried next tick", action=repr(action), error=str(exc))

    def _note_metrics(self, observed: _Observed, rss: Mapping[str, int]) -> None:
        """Lanes by status, their memory, and what their counters grew by (issue 15)."""
        metrics = self.metrics
        if metrics is None:
            return
        if observed.lane_states is not None:  # None: Redis could not be read this tick
            metrics.lane_totals(observed.lane_states)
            self._lane_status = dict(observed.statuses)
        metrics.lanes_seen(
            {
                iid: lane_status(
                    self._lane_status.get(iid),
                    alive=run.alive,
                    crash_loop=run.history.crash_loop,
                )
                for iid, run in self.runs.items()
            },
            rss,
        )

    def _balance(self, observed: _Observed) -> Balance:
        """This host's fair share, and the room elsewhere, from the hosts' heartbeats."""
        if observed.hosts is None:  # blind: take nothing more, hand nothing off
            return Balance(fair_share=len(self.runs), room_elsewhere=0)
        return balance(
            len(observed.desired),
            host_id=self.host_id,
            capacity=self.config.capacity,
            accepting=self._accepting and self._draining_since is None,
            hosts=observed.hosts,
            live_within_s=self.policy.host_live_s,
        )

    async def _observe(self) -> _Observed:
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
        watched = sorted(set(ids) | set(self.runs))
        alive = sorted(iid for iid, run in self.runs.items() if run.alive)
        # With metrics: every held lane's whole state hash, for the counters its lane keeps.
        counted = (
            sorted(iid for iid, run in self.runs.items() if run.lease is not None)
            if self.metrics is not None
            else []
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
        free = sorted(iid for iid in desired - self.runs.keys() if leases.get(iid) is None)
        return _Observed(
            desired=desired,
            leases=leases,
            warm=await self._warm(free, now_wall) if free else frozenset(),
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
                if self.metrics is not None
                else None
            ),
            hosts=[
                parse_host_entry(as_text(host), raw, now_wall).view()
                for host, raw in host_replies.items()
            ],
        )

    async def _warm(self, free: list[str], now_wall: _dt.datetime) -> frozenset[str]:
        """Free lanes whose last process may still be alive (``decide`` rule 8)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid in free:
                pipe.hmget(self.keys.state(iid), ["heartbeat_at", "pid"])
            replies: list[Any] = await pipe.execute()
        warm = set()
        # Just back from an outage: every lane's heartbeat is as old as the
        # outage, and their owners are taking their leases back right now.
        back = self._redis_back_at
        after_outage = back is not None and self.clock() - back < self.policy.lease_ttl_s
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

    def _lane_memory(self) -> dict[str, int]:
        """Resident bytes of each live lane (``MULTIPAIR_LANE_MEMORY_MAX``; none when off).

        ``/proc/<pid>/statm`` is one small read per lane, no Redis: a few
        milliseconds per tick at 1,000 lanes. A lane found over the bound is
        logged once, when it is not being stopped already.
        """
        bound = self.settings.lane_memory_max
        if bound <= 0 and self.metrics is None:  # metrics: multipair_lane_memory_bytes
            return {}
        found: dict[str, int] = {}
        for iid, run in self.runs.items():
            if run.pid is None or (rss := rss_bytes(run.pid)) is None:
                continue
            found[iid] = rss
            if 0 < bound < rss and run.signalled is None:
                log.warning(
                    "lane over its memory bound: stopping it",
                    instance_id=iid,
                    pid=run.pid,
                    rss_bytes=rss,
                    memory_max=bound,
                )
        return found

    def _redis_away(self, now: float) -> None:
        if self._redis_away_since is None:
            self._redis_away_since = now
            log.warning(
                "Redis away: lanes ride it out",
                lanes=len(self.runs),
                ride_out_s=self.policy.redis_ride_out_s,
            )

    def _redis_answered(self) -> None:
        """Redis answered: if it was away, it is back, and heartbeats are judged afresh."""
        since = self._redis_away_since
        if since is None:
            return
        now = self.clock()
        self._redis_away_since = None
        self._redis_back_at = now
        self._excuse_heartbeats(now)
        log.warning("Redis back", away_s=round(now - since, 3), lanes=len(self.runs))

    def _excuse_heartbeats(self, now: float) -> None:
        """While Redis is away, and as it comes back, no lane has missed a heartbeat.

        A heartbeat this host could not have seen is not missed: each live
        lane's clock starts again now, so it is judged ``heartbeat_timeout_s``
        (or ``start_timeout_s`` before its first) after Redis answers again.
        """
        for iid, run in list(self.runs.items()):
            if not run.alive:
                continue
            started = run.started_at if run.started_at is not None else now
            if run.heartbeat_at is not None and run.heartbeat_at >= started:
                self.runs[iid] = dataclasses.replace(run, heartbeat_at=now)
            else:
                self.runs[iid] = dataclasses.replace(run, started_at=now)

    def _note_heartbeats(self, heartbeats: Mapping[str, str | None], now: float) -> None:
        """A heartbeat value we have not seen before is a sign of life, seen ``now``."""
        for iid, raw in heartbeats.items():
            run = self.runs.get(iid)
            if raw is None or run is None or raw == self._heartbeat_raw.get(iid):
                continue
            self._heartbeat_raw[iid] = raw
            self.runs[iid] = dataclasses.replace(run, heartbeat_at=now)

    async def _forgive_stable(self, now: float) -> None:
        for iid, run in list(self.runs.items()):
            if not run.alive or run.started_at is None or not run.history.streak:
                continue
            history = after_running(self.policy, run.history, now - run.started_at)
            if history is run.history:
                continue
            self.runs[iid] = dataclasses.replace(run, history=history)
            if run.history.crash_loop and run.lease is not None:
                log.info("lane stable again: crash loop over", instance_id=iid)
                await self._write_state(iid, run.lease, crash_loop="0")

    async def _act(self, action: Action, leases: Mapping[str, Lease | None]) -> None:
        match action:
            case Start(iid):
                await self._start(iid, leases.get(iid), restart=False)
            case Restart(iid):
                await self._start(iid, leases.get(iid), restart=True)
            case Stop(iid, reason):
                run = self.runs.get(iid)
                if run is None or run.pid is None:
                    return
                self.procs.signal(run.pid, signal.SIGTERM)
                self.runs[iid] = dataclasses.replace(
                    run,
                    signalled=Signalled.TERM,
                    stop_reason=reason,
                    stop_deadline=self.clock() + self.policy.stop_timeout_s,
                )
                log.info("lane stopping (drain)", instance_id=iid, pid=run.pid, reason=str(reason))
            case Shed(iid, reason):
                run = self.runs.get(iid)
                if run is None or run.pid is None:
                    return
                self.procs.signal(run.pid, signal.SIGTERM)
                self.runs[iid] = dataclasses.replace(
                    run,
                    signalled=Signalled.TERM,
                    stop_reason=reason,
                    stop_deadline=self.clock() + self.policy.stop_timeout_s,
                    hand_off=True,
                )
                log.info(
                    "lane handed off (drains, then its lease is released)",
                    instance_id=iid,
                    pid=run.pid,
                    reason=str(reason),
                )
            case Kill(iid, reason):
                await self._kill(iid, reason)
            case Release(iid):
                await self._release(iid)

    # ------------------------------------------------------------------
    # Starting, stopping, exits
    # ------------------------------------------------------------------

    async def _start(self, iid: str, current: Lease | None, *, restart: bool) -> None:
        run = self.runs.get(iid) or LaneRun(instance_id=iid)
        if run.alive:
            return
        if self.metrics is not None and not self.metrics.deltas.known(iid):
            await self._metrics_baseline(iid)
        taken = await self._lease_for(run, current)
        if taken is None:
            # Another host was quicker: forget our record, that host runs it now.
            self.runs.pop(iid, None)
            return
        lease, expires_at = taken
        restarts = run.restarts + 1 if restart else run.restarts
        run = self.runs.get(iid) or run
        try:
            pid = await self.procs.spawn(iid, lease.token)
        except RetryLater as exc:
            now = self.clock()
            log.error("could not spawn lane", instance_id=iid, error=str(exc))
            self.runs[iid] = dataclasses.replace(
                run,
                lease=lease,
                lease_expires_at=expires_at,
                history=record_exit(self.policy, run.history, at=now, uptime=0.0),
                jitter=self.rng(),
            )
            return
        self._pids[pid] = iid
        self.runs[iid] = dataclasses.replace(
            run,
            pid=pid,
            started_at=self.clock(),
            heartbeat_at=None,
            lease=lease,
            lease_expires_at=expires_at,
            restarts=restarts,
            signalled=None,
            stop_reason=None,
            stop_deadline=float("inf"),
            restart_requested=False,
            hand_off=False,
        )
        log.info(
            "lane started",
            instance_id=iid,
            pid=pid,
            restarts=restarts,
            fence=lease.token,
            crash_loop=run.history.crash_loop,
        )
        await self._publish_fenced(
            iid,
            lease,
            bs.LaneStarted,
            {"host": self.host_id, "pid": pid, "restarts": restarts},
            host=self.host_id,
            pid=str(pid),
            started_at=_iso_now(),
            restarts=str(restarts),
            crash_loop="1" if run.history.crash_loop else "0",
        )

    async def _metrics_baseline(self, iid: str) -> None:
        """The lane's counters before this host first starts it: what it did elsewhere is
        not this host's. Unreadable: it is counted from this host's first look instead."""
        assert self.metrics is not None
        try:
            async with asyncio.timeout(_REDIS_CALL_S):
                raw = await self.redis.hgetall(self.keys.state(iid))
        except (RedisError, OSError, TimeoutError):
            self._redis_error()
            return
        self.metrics.baseline(iid, text_map(raw))

    async def _lease_for(self, run: LaneRun, current: Lease | None) -> tuple[Lease, float] | None:
        """A lease to start the lane under, and when it expires; None if another host has it."""
        iid = run.instance_id
        if (
            run.lease is not None
            and current == run.lease
            and self.clock() < run.lease_expires_at - self.policy.lease_margin_s
        ):
            return run.lease, run.lease_expires_at
        if current is not None and current.host_id == self.host_id:
            # Ours from an earlier run of this host (or one we are losing): take
            # a fresh token so whatever still holds the old one is fenced off.
            async with asyncio.timeout(_REDIS_CALL_S):
                await self.leases.release(iid, current)
        sent_at = self.clock()
        async with asyncio.timeout(_REDIS_CALL_S):
            lease = await self.leases.acquire(iid)
        if lease is None:
            return None
        return lease, sent_at + self.policy.lease_ttl_s

    async def _kill(self, iid: str, reason: StopReason) -> None:
        lost = self._kill_now(iid, reason)
        if lost is not None:
            await self._publish_lease_lost(iid, *lost)

    def _kill_now(self, iid: str, reason: StopReason) -> tuple[int, Lease | None] | None:
        """SIGKILL a live lane, no Redis involved; for a lost lease, (pid, lease it had)."""
        run = self.runs.get(iid)
        if run is None or run.pid is None:
            return None
        self.procs.signal(run.pid, signal.SIGKILL)
        lost = reason is StopReason.LEASE_LOST
        self.runs[iid] = dataclasses.replace(
            run,
            signalled=Signalled.KILL,
            stop_reason=reason,
            lease=None if lost else run.lease,
        )
        log.warning("lane killed", instance_id=iid, pid=run.pid, reason=str(reason))
        if lost and self.metrics is not None:
            away = self._redis_away_since is not None
            self.metrics.restarted(RestartReason.REDIS_OUTAGE if away else RestartReason.LEASE_LOST)
        return (run.pid, run.lease) if lost else None

    async def _publish_lease_lost(self, iid: str, pid: int | None, lease: Lease | None) -> None:
        """Report ``lane_stopped`` "lease lost", unless another host owns the lane now."""
        if lease is None:
            return
        event = bs.LaneStopped(
            instance_id=iid,
            at=_dt.datetime.now(_dt.UTC),
            host=self.host_id,
            pid=pid,
            reason=str(StopReason.LEASE_LOST),
        )
        entry = bs.encode_event(event)
        try:
            async with asyncio.timeout(_REDIS_CALL_S):
                written = await self._lease_lost_report(
                    keys=[self.keys.lease(iid), self.keys.events(iid)],
                    args=[lease.token, self.settings.events_maxlen, entry["v"], entry["body"]],
                )
        except (RedisError, OSError) as exc:
            self._redis_error()
            log.warning("could not publish lane_stopped", instance_id=iid, error=str(exc))
            return
        if not written:
            log.info("lane_stopped not published: another host owns the lane", instance_id=iid)

    async def _release(self, iid: str) -> None:
        run = self.runs.pop(iid, None)
        self._heartbeat_raw.pop(iid, None)
        if run is not None and run.lease is not None:
            async with asyncio.timeout(_REDIS_CALL_S):
                await self.leases.release(iid, run.lease)
            log.info("lease released", instance_id=iid)

    async def _release_all(self) -> None:
        for iid in list(self.runs):
            try:
                await self._release(iid)
            except (RedisError, OSError, RetryLater) as exc:
                log.warning("could not release lease", instance_id=iid, error=str(exc))

    async def _handle_exits(self) -> None:
        while not self.procs.exits.empty():
            await self._on_exit(self.procs.exits.get_nowait())

    async def _on_exit(self, exit_: LaneExit) -> None:
        iid = self._pids.pop(exit_.pid, None)
        run = self.runs.get(iid) if iid is not None else None
        if iid is None or run is None or run.pid != exit_.pid:
            return
        now = self.clock()
        uptime = now - (run.started_at if run.started_at is not None else now)
        reason = run.stop_reason
        if exit_.exit_code == EXIT_LEASE_LOST and reason is None:
            # The lane found its fence moved on (a write refused): not a crash.
            reason = StopReason.LEASE_LOST
            if self.metrics is not None:
                self.metrics.restarted(RestartReason.LEASE_LOST)
            await self._publish_lease_lost(iid, exit_.pid, run.lease)
            run = dataclasses.replace(run, lease=None)
        stopped = dataclasses.replace(
            run, pid=None, signalled=None, stop_reason=None, stop_deadline=float("inf")
        )
        how = exit_.describe()
        if reason is not None and not reason.is_failure:
            self.runs[iid] = stopped
            log.info("lane exited", instance_id=iid, pid=exit_.pid, how=how, reason=str(reason))
            if reason is StopReason.LEASE_LOST or run.lease is None:
                return  # reported when the lease was lost
            await self._publish_fenced(
                iid,
                run.lease,
                bs.LaneStopped,
                {"host": self.host_id, "pid": exit_.pid, "reason": str(reason)},
                pid="",
                last_exit=how,
                last_exit_cause=exit_.cause or "",
            )
            return
        history = record_exit(
            self.policy, run.history, at=now, uptime=uptime, exit_code=exit_.exit_code
        )
        if self.metrics is not None:
            memory = reason is StopReason.MEMORY
            self.metrics.restarted(RestartReason.MEMORY if memory else RestartReason.CRASH)
        self.runs[iid] = dataclasses.replace(stopped, history=history, jitter=self.rng())
        log.warning(
            "lane crashed",
            instance_id=iid,
            pid=exit_.pid,
            how=how,
            uptime_s=round(uptime, 3),
            exits_in_a_row=history.streak,
            crash_loop=history.crash_loop,
            why=str(reason) if reason is not None else None,
            cause=exit_.cause,
        )
        if reason is not None:  # "memory: exit code 0", "heartbeat timeout: signal 9 (SIGKILL)"
            how = f"{reason}: {how}"
        if run.lease is not None:
            await self._publish_fenced(
                iid,
                run.lease,
                bs.LaneCrashed,
                {
                    "host": self.host_id,
                    "pid": exit_.pid,
                    "exit_code": exit_.exit_code,
                    "signal": exit_.signal,
                    "restarts": run.restarts,
                    "crash_loop": history.crash_loop,
                    "cause": exit_.cause,
                },
                pid="",
                last_exit=how,
                # Why, in the lane's own words: `lane show` and `status` need no host log.
                last_exit_cause=exit_.cause or "",
                crash_loop="1" if history.crash_loop else "0",
            )
        await self._lane_log_line(
            iid,
            "lane crashed",
            host=self.host_id,
            pid=exit_.pid,
            how=how,
            cause=exit_.cause,
            crash_loop=history.crash_loop,
        )

    async def _lane_log_line(self, iid: str, event: str, **fields: object) -> None:
        """One line in the lane's own log stream (``multipair logs``), best effort.

        A lane that cannot start never ships the line that says why; its
        host adds it, so the lane's log read from anywhere ends with it.
        """
        line = {
            "module": "multipair.supervisor",
            "instance_id": iid,
            **fields,
            "event": event,
            "level": "error",
            "timestamp": _iso_now(),
        }
        try:
            async with asyncio.timeout(_REDIS_CALL_S):
                await self.redis.xadd(
                    self.keys.logs(iid),
                    {"v": "1", "line": orjson.dumps(line)},
                    maxlen=LOG_STREAM_MAXLEN,
                    approximate=True,
                )
        except (RedisError, OSError) as exc:
            log.info("lane log line not written", instance_id=iid, error=str(exc))

    async def _stop_now(self) -> None:
        """Second signal: SIGKILL every lane, wait (briefly) for their exits."""
        for iid, run in list(self.runs.items()):
            if run.pid is not None:
                self.procs.signal(run.pid, signal.SIGKILL)
                self.runs[iid] = dataclasses.replace(
                    run, signalled=Signalled.KILL, stop_reason=StopReason.SHUTDOWN
                )
        deadline = self.clock() + _IMMEDIATE_STOP_WAIT_S
        while any(run.alive for run in self.runs.values()):
            left = deadline - self.clock()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    exit_ = await self.procs.exits.get()
            except TimeoutError:
                break
            with contextlib.suppress(RedisError, OSError):
                await self._on_exit(exit_)

    # ------------------------------------------------------------------
    # Writes about a lane, fenced by its lease
    # ------------------------------------------------------------------

    async def _publish_fenced(
        self,
        iid: str,
        lease: Lease,
        event_cls: type[bs.Event],
        event_fields: Mapping[str, Any],
        **state: str,
    ) -> None:
        event = event_cls(instance_id=iid, at=_dt.datetime.now(_dt.UTC), **event_fields)
        entry = bs.encode_event(event)
        args: list[Any] = [lease.token, self.settings.events_maxlen, entry["v"], entry["body"]]
        for name, value in state.items():
            args += [name, value]
        keys = [self.keys.lease(iid), self.keys.events(iid), self.keys.state(iid)]
        try:
            async with asyncio.timeout(_REDIS_CALL_S):
                await self._publish(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if is_fenced_error(exc):
                log.warning("not published: this host's lease is gone", instance_id=iid)
            else:
                self._redis_error()
                log.warning("could not publish", instance_id=iid, error=str(exc))

    async def _write_state(self, iid: str, lease: Lease, **state: str) -> None:
        args: list[Any] = [lease.token]
        for name, value in state.items():
            args += [name, value]
        try:
            async with asyncio.timeout(_REDIS_CALL_S):
                await self._state(keys=[self.keys.lease(iid), self.keys.state(iid)], args=args)
        except (RedisError, OSError) as exc:
            self._redis_error()
            log.warning("state not written", instance_id=iid, error=str(exc))

    # ------------------------------------------------------------------
    # Leases, host heartbeat, ops control
    # ------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.policy.renew_every_s)
            await self._renew_all()

    async def _renew_all(self) -> None:
        try:
            # Bounded: a renewal that has not come back within one period is
            # no renewal (the watchdog stops lanes before their leases lapse).
            async with asyncio.timeout(self.policy.renew_every_s):
                await self._keep_leases()
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_error()
            if self._redis_away_since is None or not _away(exc):  # once per outage
                log.warning(
                    "lease renewal failed",
                    lanes=sum(1 for run in self.runs.values() if run.lease is not None),
                    error=str(exc) or repr(exc),
                )
            if _away(exc):
                self._redis_away(self.clock())

    async def _keep_leases(self) -> None:
        """Renew every lease held, taking back those that lapsed while Redis was away.

        One pipelined round trip (:meth:`LeaseManager.keep_many`). A lease
        another host holds now, or took since (the fence moved on), is lost:
        its lane is killed at once. Raises when Redis cannot be reached.
        """
        held = [(iid, run.lease) for iid, run in self.runs.items() if run.lease is not None]
        if not held:
            return
        sent_at = self.clock()
        results = await self.leases.keep_many(held)
        if self.metrics is not None:
            self.metrics.lease_renewal(self.clock() - sent_at)
        failed: dict[str, Exception] = {}
        retaken: list[str] = []
        for (iid, lease), result in zip(held, results, strict=True):
            run = self.runs.get(iid)
            if run is None or run.lease != lease:
                continue  # changed while we waited
            if isinstance(result, Exception):
                failed[iid] = result
            elif result is LeaseKept.LOST:
                await self._lease_lost(iid)
            else:
                if result is LeaseKept.RETAKEN:
                    retaken.append(iid)
                self.runs[iid] = dataclasses.replace(
                    run, lease_expires_at=sent_at + self.policy.lease_ttl_s
                )
        if retaken:
            log.warning("leases had lapsed while Redis was away: taken back", lanes=sorted(retaken))
        if failed:
            first = next(iter(failed.values()))
            if len(failed) == len(held) and _away(first):
                raise first  # Redis is away for all of them
            log.warning("lease renewal failed", lanes=sorted(failed), error=str(first))

    async def _lease_watch_loop(self) -> None:
        """SIGKILL every lane whose lease could expire before the next renewal (no Redis used).

        The tick's own rule does the same, but the tick may be stuck on a
        Redis call that has not timed out yet; this loop awaits nothing but
        the clock, so a frozen host's lanes are stopped while their leases
        still name it, ``lease_margin_s`` before another host may take them.
        While Redis is away the deadline is ``redis_ride_out_s`` into the
        outage instead (:func:`~multipair.supervisor.policy.lease_deadline`).
        """
        while not self._closing:
            now = self.clock()
            reports = []
            away_since = self._redis_away_since
            for iid, run in list(self.runs.items()):
                if (
                    run.alive
                    and run.signalled is not Signalled.KILL
                    and now >= lease_deadline(self.policy, run.lease_expires_at, away_since)
                ):
                    log.error(
                        "lease not renewed in time: lane stopped before it can expire"
                        if away_since is None
                        else "Redis away past the ride-out bound: lane stopped",
                        instance_id=iid,
                    )
                    lost = self._kill_now(iid, StopReason.LEASE_LOST)
                    if lost is not None:
                        reports.append((iid, *lost))
            for iid, pid, lease in reports:  # only once every lane is killed
                await self._publish_lease_lost(iid, pid, lease)
            if reports:
                self._wake_up()
            await asyncio.sleep(_WATCH_EVERY_S)

    async def _lease_lost(self, iid: str) -> None:
        """Our renewal was refused: the lane must not run here a moment longer."""
        run = self.runs.get(iid)
        if run is None:
            return
        if run.pid is not None and run.signalled is not Signalled.KILL:
            await self._kill(iid, StopReason.LEASE_LOST)
        else:
            self.runs[iid] = dataclasses.replace(run, lease=None)
        self._wake_up()

    async def _heartbeat_loop(self) -> None:
        started_at = _iso_now()
        while not self._closing:
            body = {
                "heartbeat_at": _iso_now(),
                "started_at": started_at,
                "pid": os.getpid(),
                "lanes": len(self.runs),
                "capacity": self.config.capacity,
                "accepting": self._accepting and self._draining_since is None,
                "draining": self._draining_since is not None,
                "template_pid": self.procs.template_pid,
                "metrics_port": self.metrics_port,
            }
            try:
                async with asyncio.timeout(_REDIS_CALL_S):
                    claimed = await self.claim.renew()
                    if claimed:
                        await self.redis.hset(self.keys.hosts(), self.host_id, orjson.dumps(body))
            except (RedisError, OSError) as exc:
                self._redis_error()
                log.warning("host heartbeat not written", error=str(exc))
            else:
                if not claimed:
                    # Our claim lapsed (this process was frozen or cut off for a
                    # lease TTL) and another supervisor runs as this host now:
                    # its lanes are ours no longer. Stop everything at once.
                    log.error(
                        "host id claimed by another supervisor: lanes killed, stopping",
                        host=self.host_id,
                    )
                    self._claim_lost = True
                    self._accepting = False
                    self._immediate = True
                    self._wake_up()
                    return
            await asyncio.sleep(self.config.heartbeat_every_s)

    async def _ensure_control_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.host_control(self.host_id), CONTROL_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _control_loop(self) -> None:
        """Pending messages of an earlier run first, then new ones, for ever."""
        stream = self.keys.host_control(self.host_id)
        cursor = "0"
        while not self._closing:
            try:
                reply: Any = await self.redis.xreadgroup(
                    CONTROL_GROUP,
                    self.host_id,
                    {stream: cursor},
                    count=32,
                    block=None if cursor != ">" else _CONTROL_BLOCK_MS,
                )
                entries = reply[0][1] if reply else []
                if cursor != ">" and not entries:
                    cursor = ">"
                for raw_id, fields in entries:
                    entry_id = as_text(raw_id)
                    if cursor != ">":
                        cursor = entry_id
                    await self._on_control(entry_id, fields or {})
                    await self.redis.xack(stream, CONTROL_GROUP, entry_id)
                if entries:  # senders need not trim: keep the stream short here
                    await self.redis.xtrim(stream, maxlen=CONTROL_MAXLEN, approximate=True)
            except (RedisError, OSError, RetryLater) as exc:
                self._redis_error()
                log.warning("control stream unreadable", error=str(exc))
                await asyncio.sleep(_REDIS_RETRY_S)
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    with contextlib.suppress(RedisError, OSError):
                        await self._ensure_control_group()

    async def _on_control(self, entry_id: str, fields: Any) -> None:
        """Validate one control message, log it with who asked, apply it; never raises.

        A malformed message (size, fields, types, action: ``decode_control``)
        is refused with a log line naming the reason; the caller acknowledges
        it like any other, so it is not read again and cannot stop the loop.
        """
        age_s = time.time() - int(entry_id.partition("-")[0]) / 1000
        if age_s > MAX_AGE_S:
            log.warning(
                "control message too old: ignored",
                entry_id=entry_id,
                age_s=round(age_s),
                requested_by=peek_requested_by(fields),
            )
            return
        try:
            message = decode_control(fields)
        except CommandError as exc:
            log.warning(
                "bad control message: refused",
                entry_id=entry_id,
                reason=str(exc.reason),
                error=exc.detail,
                requested_by=peek_requested_by(fields),
            )
            return
        except Exception as exc:  # a bug in the decoder must not end the control loop
            log.error("control message unreadable: refused", entry_id=entry_id, error=repr(exc))
            return
        log.info(
            "control message",
            entry_id=entry_id,
            action=str(message.action),
            instance_id=message.instance_id,
            request_id=message.request_id,
            requested_by=message.requested_by,
        )
        if message.action.for_host:
            self._apply_host_control(message.action)
            self._wake_up()
            return
        try:
            await self._apply_control(message)
        except (MultipairError, RedisError) as exc:  # unknown or damaged lane, Redis trouble
            log.warning("control message not applied", entry_id=entry_id, error=str(exc))
        self._wake_up()

    def _apply_host_control(self, action: ControlAction) -> None:
        if action is ControlAction.DRAIN:
            if self._draining_since is None:
                self._draining_since = self.clock()
                log.warning(
                    "draining: lanes go to other hosts one by one, between transactions",
                    host=self.host_id,
                    lanes=len(self.runs),
                )
        elif self._draining_since is not None:  # accept / undrain
            self._draining_since = None
            log.info("accepting lanes again", host=self.host_id)

    async def _apply_control(self, message: ControlMessage) -> None:
        iid = message.instance_id
        if iid is None:
            return
        run = self.runs.get(iid)
        match message.action:
            case ControlAction.STOP:
                # Remembered in the profile: no host starts it again until `start`.
                await self.profiles.update(iid, enabled=False)
            case ControlAction.START:
                await self.profiles.update(iid, enabled=True)
                if run is not None and not run.alive:
                    self.runs[iid] = dataclasses.replace(
                        run, history=ExitHistory(), restart_requested=True
                    )
            case ControlAction.RESTART:
                if run is None:
                    log.warning("restart of a lane this host does not run", instance_id=iid)
                    return
                # An operator's restart forgives earlier crashes (they may have fixed the cause).
                self.runs[iid] = dataclasses.replace(
                    run, history=ExitHistory(), restart_requested=True
                )
                if self.metrics is not None:
                    self.metrics.restarted(RestartReason.OPS)
