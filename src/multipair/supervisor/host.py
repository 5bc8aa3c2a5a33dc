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
(:mod:`multipair.supervisor.inbox`, messages of
:mod:`multipair.supervisor.control`).

This module is the shell; its rooms: :mod:`~multipair.supervisor.observe`
(what a tick reads), :mod:`~multipair.supervisor.lanes` (lane records,
processes, the plan's actions), :mod:`~multipair.supervisor.reports` (fenced
writes about a lane), :mod:`~multipair.supervisor.outage` (riding out a Redis
outage), :mod:`~multipair.supervisor.inbox` (the control stream).

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
import os
import random
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import ConfigurationError, MultipairError, RetryLater
from multipair.leases import LeaseKept, LeaseManager
from multipair.logs import get_logger
from multipair.redis_conn import connect_blocking
from multipair.store.durable import primary_identity
from multipair.store.meta import check_master_key
from multipair.store.profiles import ProfileStore
from multipair.supervisor.control import ControlAction, ControlMessage
from multipair.supervisor.decide import Balance, LaneRun, Signalled, StopReason, balance, reconcile
from multipair.supervisor.hosts import HostClaim
from multipair.supervisor.inbox import ControlInbox
from multipair.supervisor.lanes import LaneKeeper
from multipair.supervisor.metrics import (
    HostMetrics,
    MetricsConfig,
    MetricsServer,
    RestartReason,
    lane_status,
)
from multipair.supervisor.observe import Observed, Observer
from multipair.supervisor.outage import REDIS_CALL_S, RedisOutage, excuse_heartbeats, is_away
from multipair.supervisor.policy import ExitHistory, RestartPolicy, lease_deadline, tick_period
from multipair.supervisor.procs import LaneProcesses
from multipair.supervisor.reports import LaneReports, iso_now

__all__ = ["DEFAULT_CAPACITY", "Host", "HostConfig"]

log = get_logger("multipair.supervisor")

DEFAULT_CAPACITY: Final = 100
"""Lanes one host runs at most unless ``--capacity`` says otherwise."""

_REDIS_CONNECTIONS: Final = 16
"""The supervisor's pool: tick, renewals, heartbeat, control read and reports, with room."""
_WATCH_EVERY_S: Final = 0.1
"""How often the lease watchdog looks at the clock."""


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
        self.metrics: HostMetrics | None = None
        """Prometheus series (issue 15), with ``config.metrics``; served by ``_metrics_server``."""
        self._metrics_server: MetricsServer | None = None
        self._lane_status: dict[str, str | None] = {}
        """The last ``status`` read from each live lane's state hash (for ``multipair_lanes``)."""
        if config.metrics is not None:
            self.metrics = HostMetrics(self.host_id, per_lane=config.metrics.per_lane)
            self._metrics_server = MetricsServer(self.metrics, config.metrics)
        self.procs = LaneProcesses(settings, on_exit=self._wake_up)
        self.outage = RedisOutage(self.policy, clock)
        self.observer = Observer(self.redis, self.keys, self.policy, clock)
        self.reports = LaneReports(
            self.redis,
            self.keys,
            self.host_id,
            events_maxlen=settings.events_maxlen,
            on_redis_error=self._redis_error,
        )
        self.lanes = LaneKeeper(
            settings,
            host_id=self.host_id,
            policy=self.policy,
            clock=clock,
            rng=rng,
            redis=self.redis,
            keys=self.keys,
            procs=self.procs,
            leases=self.leases,
            reports=self.reports,
            outage=self.outage,
            metrics=self.metrics,
            on_redis_error=self._redis_error,
        )
        self.runs: dict[str, LaneRun] = self.lanes.runs
        """The lanes' records (the keeper's dict itself, never rebound)."""
        self.inbox = ControlInbox(
            self.redis,
            self.keys,
            self.host_id,
            handle=self._on_control_message,
            closing=lambda: self._closing,
            on_redis_error=self._redis_error,
        )
        self._desired: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._accepting = True
        self._immediate = False
        self._closing = False
        """Set when the tick loop has ended: the helper loops end too."""
        self._claim_lost = False
        self._draining_since: float | None = None
        """When ops asked this host to drain (``drain`` control message); None: not draining."""

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
            await self.inbox.ensure_group()
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
                        tasks.create_task(self.inbox.run(), name="control"),
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
            await self.lanes.release_all()
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
                await self.lanes.stop_now()
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
        await self.lanes.handle_exits()
        now = self.clock()
        try:
            async with asyncio.timeout(REDIS_CALL_S):
                if self.outage.away_since is not None or self.outage.primary is None:
                    # Which primary answers (once per outage): a new one may lack
                    # the latest writes (docs/deploy-ha.md "After a failover").
                    self.outage.note_primary(await primary_identity(self.redis, self.keys.hosts()))
                if self.outage.away_since is not None:
                    # Back from an outage? Leases that lapsed meanwhile are taken
                    # back first, or lost for good, before anything looks at them.
                    await self._keep_leases()
                observed = await self.observer.observe(
                    self.runs, counters=self.metrics is not None, back_at=self.outage.back_at
                )
            self._desired = observed.desired
            self.outage.answered(self.runs)
        except (RedisError, OSError, RetryLater) as exc:
            self._redis_error()
            # Cannot see Redis: decide on what we last knew. The lease expiry
            # rule (and the watchdog) still kill lanes whose leases could not
            # be renewed, past the ride-out bound when Redis is away.
            if self.outage.away_since is None or not is_away(exc):  # once per outage
                log.warning(
                    "cannot read Redis; deciding on the last view", error=str(exc) or repr(exc)
                )
            if is_away(exc):
                self.outage.away(now, len(self.runs))
            observed = Observed(
                desired=self._desired,
                leases={iid: run.lease for iid, run in self.runs.items()},
                heartbeats={},
            )
        if self.outage.away_since is not None:
            excuse_heartbeats(self.runs, now)
        self.lanes.note_heartbeats(observed.heartbeats, now)
        await self.lanes.forgive_stable(now)
        rss = self.lanes.memory()
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
            redis_away_since=self.outage.away_since,
        )
        for action in actions:
            try:
                await self.lanes.act(action, observed.leases)
            except (RedisError, OSError, RetryLater) as exc:
                self._redis_error()
                log.warning("action failed; retried next tick", action=repr(action), error=str(exc))

    def _note_metrics(self, observed: Observed, rss: Mapping[str, int]) -> None:
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

    def _balance(self, observed: Observed) -> Balance:
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

    # ------------------------------------------------------------------
    # Ops control (read by the inbox)
    # ------------------------------------------------------------------

    async def _on_control_message(self, entry_id: str, message: ControlMessage) -> None:
        """Apply one control message taken by the inbox; never raises for a bad lane or Redis."""
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

    # ------------------------------------------------------------------
    # Leases, host heartbeat
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
            if self.outage.away_since is None or not is_away(exc):  # once per outage
                log.warning(
                    "lease renewal failed",
                    lanes=sum(1 for run in self.runs.values() if run.lease is not None),
                    error=str(exc) or repr(exc),
                )
            if is_away(exc):
                self.outage.away(self.clock(), len(self.runs))

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
        restored: list[str] = []
        for (iid, lease), result in zip(held, results, strict=True):
            run = self.runs.get(iid)
            if run is None or run.lease != lease:
                continue  # changed while we waited
            if isinstance(result, Exception):
                failed[iid] = result
            elif result is LeaseKept.LOST:
                await self._lease_lost(iid)
            elif result is LeaseKept.RESTORED and not await self.lanes.restore_confirmed(
                iid, lease
            ):
                await self._lease_lost(iid)  # its token could be drawn again: not used
            else:
                if result is LeaseKept.RESTORED:
                    restored.append(iid)
                if result is LeaseKept.RETAKEN:
                    retaken.append(iid)
                self.runs[iid] = dataclasses.replace(
                    run, lease_expires_at=sent_at + self.policy.lease_ttl_s
                )
        if retaken:
            log.warning("leases had lapsed while Redis was away: taken back", lanes=sorted(retaken))
        if restored:
            log.warning(
                "the new Redis primary had lost fencing tokens in use: set again",
                lanes=sorted(restored),
            )
        if failed:
            first = next(iter(failed.values()))
            if len(failed) == len(held) and is_away(first):
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
            away_since = self.outage.away_since
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
                    lost = self.lanes.kill_now(iid, StopReason.LEASE_LOST)
                    if lost is not None:
                        reports.append((iid, *lost))
            for iid, pid, lease in reports:  # only once every lane is killed
                await self.reports.lease_lost(iid, pid, lease)
            if reports:
                self._wake_up()
            await asyncio.sleep(_WATCH_EVERY_S)

    async def _lease_lost(self, iid: str) -> None:
        """Our renewal was refused: the lane must not run here a moment longer."""
        run = self.runs.get(iid)
        if run is None:
            return
        if run.pid is not None and run.signalled is not Signalled.KILL:
            await self.lanes.kill(iid, StopReason.LEASE_LOST)
        else:
            self.runs[iid] = dataclasses.replace(run, lease=None)
        self._wake_up()

    async def _heartbeat_loop(self) -> None:
        started_at = iso_now()
        while not self._closing:
            body = {
                "heartbeat_at": iso_now(),
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
                async with asyncio.timeout(REDIS_CALL_S):
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
