"""The lanes this host runs: their records, processes and the plan's actions on them.

:class:`LaneKeeper` carries out what :func:`~multipair.supervisor.decide.reconcile`
decides (start under a lease, SIGTERM to drain or hand off, SIGKILL,
release) and keeps each lane's :class:`~multipair.supervisor.decide.LaneRun`
up to date as processes exit, heartbeat and run stably. It is driven by the
host's tick loop only, so a lane's record is never written by two tasks
about the same event (the lease keeping changes lease fields only).

A lane is started only under a lease just taken (or still held and
renewed); a lease left by an earlier run of this host is released and taken
afresh, so anything still holding the old token is fenced off.

With ``MULTIPAIR_REDIS_MIN_REPLICAS`` above 0 a lease just taken is used
only once its fencing-counter increment is confirmed on that many replicas
(:mod:`multipair.store.durable`): a token a failover could lose might be
drawn again by the next owner, so an unconfirmed one is released unused
and the lane is tried again on a later tick. Tokens in use therefore stay
strictly increasing across a failover. The same holds on every path a
token is used: a lease acquired (a start, a hand-over to this host, a lease
of an earlier run taken afresh) goes through :func:`lease_confirmed`; a
lease taken back after it lapsed keeps a token confirmed when it was
acquired, and one taken back on a new primary that had lost it (the fence
set again, ``LeaseKept.RESTORED``) is confirmed again
(:meth:`LaneKeeper.restore_confirmed`) or its lane stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Callable, Mapping
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import RetryLater
from multipair.leases import Lease, LeaseManager
from multipair.logs import get_logger
from multipair.redis_conn import text_map
from multipair.store.durable import Durability, ReplicaWait, replica_wait
from multipair.supervisor.decide import (
    Action,
    Kill,
    LaneRun,
    Release,
    Restart,
    Shed,
    Signalled,
    Start,
    Stop,
    StopReason,
)
from multipair.supervisor.metrics import HostMetrics, RestartReason
from multipair.supervisor.outage import REDIS_CALL_S, RedisOutage
from multipair.supervisor.policy import RestartPolicy, after_running, record_exit
from multipair.supervisor.procs import EXIT_LEASE_LOST, LaneExit, LaneProcesses, rss_bytes
from multipair.supervisor.reports import LaneReports, iso_now

__all__ = ["LaneKeeper", "lease_confirmed"]

log = get_logger("multipair.supervisor")

_IMMEDIATE_STOP_WAIT_S: Final = 5.0


async def lease_confirmed(
    leases: LeaseManager, replicas: ReplicaWait | None, iid: str, lease: Lease
) -> bool:
    """Whether the lease just taken may be used: its fencing token is on enough replicas.

    Without replicas to wait for, always. Otherwise one ``WAIT`` on the lane's
    slot (:meth:`ReplicaWait.confirm`); too few replicas: the lease is
    released (best effort: else it expires) and False returned, so the token
    is never used and the lane is tried again on a later tick with a new one.
    """
    if replicas is None:
        return True
    async with asyncio.timeout(REDIS_CALL_S + replicas.durability.wait_ms / 1000):
        acked = await replicas.confirm(leases.keys.writes(iid))
    if acked >= replicas.min_replicas:
        return True
    log.warning(
        "lease not used: its fencing token is not confirmed on the replicas",
        instance_id=iid,
        token=lease.token,
        replicas=acked,
        wanted=replicas.min_replicas,
    )
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        async with asyncio.timeout(REDIS_CALL_S):
            await leases.release(iid, lease)
    return False


class LaneKeeper:
    """This host's lane records (``runs``) and the processes behind them."""

    def __init__(
        self,
        settings: Settings,
        *,
        host_id: str,
        policy: RestartPolicy,
        clock: Callable[[], float],
        rng: Callable[[], float],
        redis: Redis,
        keys: bs.Keys,
        procs: LaneProcesses,
        leases: LeaseManager,
        reports: LaneReports,
        outage: RedisOutage,
        metrics: HostMetrics | None,
        on_redis_error: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.host_id = host_id
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.redis = redis
        self.keys = keys
        self.procs = procs
        self.leases = leases
        self.reports = reports
        self.outage = outage
        self.metrics = metrics
        self._redis_error = on_redis_error
        self.runs: dict[str, LaneRun] = {}
        self._pids: dict[int, str] = {}
        self._heartbeat_raw: dict[str, str] = {}
        self._replicas = replica_wait(
            redis,
            Durability(min_replicas=settings.redis_min_replicas, wait_ms=settings.redis_wait_ms),
        )

    async def act(self, action: Action, leases: Mapping[str, Lease | None]) -> None:
        """Carry out one action of the plan."""
        match action:
            case Start(iid):
                await self._start(iid, leases.get(iid), restart=False)
            case Restart(iid):
                await self._start(iid, leases.get(iid), restart=True)
            case Stop(iid, reason):
                pid = self._terminate(iid, reason, hand_off=False)
                if pid is not None:
                    log.info("lane stopping (drain)", instance_id=iid, pid=pid, reason=str(reason))
            case Shed(iid, reason):
                pid = self._terminate(iid, reason, hand_off=True)
                if pid is not None:
                    log.info(
                        "lane handed off (drains, then its lease is released)",
                        instance_id=iid,
                        pid=pid,
                        reason=str(reason),
                    )
            case Kill(iid, reason):
                await self.kill(iid, reason)
            case Release(iid):
                await self.release(iid)

    def _terminate(self, iid: str, reason: StopReason, *, hand_off: bool) -> int | None:
        """SIGTERM a live lane (it drains) and note the stop; its pid, None when not alive.

        ``hand_off``: release its lease for another host once it exits.
        """
        run = self.runs.get(iid)
        if run is None or run.pid is None:
            return None
        self.procs.signal(run.pid, signal.SIGTERM)
        self.runs[iid] = dataclasses.replace(
            run,
            signalled=Signalled.TERM,
            stop_reason=reason,
            stop_deadline=self.clock() + self.policy.stop_timeout_s,
            hand_off=hand_off or run.hand_off,
        )
        return run.pid

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
        await self.reports.publish(
            iid,
            lease,
            bs.LaneStarted,
            {"host": self.host_id, "pid": pid, "restarts": restarts},
            host=self.host_id,
            pid=str(pid),
            started_at=iso_now(),
            restarts=str(restarts),
            crash_loop="1" if run.history.crash_loop else "0",
        )

    async def _metrics_baseline(self, iid: str) -> None:
        """The lane's counters before this host first starts it: what it did elsewhere is
        not this host's. Unreadable: it is counted from this host's first look instead."""
        assert self.metrics is not None
        try:
            async with asyncio.timeout(REDIS_CALL_S):
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
            async with asyncio.timeout(REDIS_CALL_S):
                await self.leases.release(iid, current)
        sent_at = self.clock()
        async with asyncio.timeout(REDIS_CALL_S):
            lease = await self.leases.acquire(iid)
        if lease is None:
            return None
        if not await self._confirmed(iid, lease):
            return None
        return lease, sent_at + self.policy.lease_ttl_s

    async def _confirmed(self, iid: str, lease: Lease) -> bool:
        """Whether ``lease``'s token may be used (:func:`lease_confirmed`)."""
        return await lease_confirmed(self.leases, self._replicas, iid, lease)

    async def restore_confirmed(self, iid: str, lease: Lease) -> bool:
        """Whether a token whose fence was set again on a new primary may stay in use.

        Without replicas to wait for, yes. Otherwise the fence's write must be
        confirmed (:func:`lease_confirmed`; not confirmed: the lease is released
        and the caller stops the lane as for a lost lease).
        """
        try:
            return await self._confirmed(iid, lease)
        except (RedisError, OSError, TimeoutError, RetryLater):
            return False

    async def kill(self, iid: str, reason: StopReason) -> None:
        lost = self.kill_now(iid, reason)
        if lost is not None:
            await self.reports.lease_lost(iid, *lost)

    def kill_now(self, iid: str, reason: StopReason) -> tuple[int, Lease | None] | None:
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
            away = self.outage.away_since is not None
            self.metrics.restarted(RestartReason.REDIS_OUTAGE if away else RestartReason.LEASE_LOST)
        return (run.pid, run.lease) if lost else None

    async def release(self, iid: str) -> None:
        run = self.runs.pop(iid, None)
        self._heartbeat_raw.pop(iid, None)
        if run is not None and run.lease is not None:
            async with asyncio.timeout(REDIS_CALL_S):
                await self.leases.release(iid, run.lease)
            log.info("lease released", instance_id=iid)

    async def release_all(self) -> None:
        for iid in list(self.runs):
            try:
                await self.release(iid)
            except (RedisError, OSError, RetryLater) as exc:
                log.warning("could not release lease", instance_id=iid, error=str(exc))

    async def handle_exits(self) -> None:
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
            await self.reports.lease_lost(iid, exit_.pid, run.lease)
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
            await self.reports.publish(
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
            await self.reports.publish(
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
        await self.reports.log_line(
            iid,
            "lane crashed",
            host=self.host_id,
            pid=exit_.pid,
            how=how,
            cause=exit_.cause,
            crash_loop=history.crash_loop,
        )

    async def stop_now(self) -> None:
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

    def note_heartbeats(self, heartbeats: Mapping[str, str | None], now: float) -> None:
        """A heartbeat value we have not seen before is a sign of life, seen ``now``."""
        for iid, raw in heartbeats.items():
            run = self.runs.get(iid)
            if raw is None or run is None or raw == self._heartbeat_raw.get(iid):
                continue
            self._heartbeat_raw[iid] = raw
            self.runs[iid] = dataclasses.replace(run, heartbeat_at=now)

    async def forgive_stable(self, now: float) -> None:
        for iid, run in list(self.runs.items()):
            if not run.alive or run.started_at is None or not run.history.streak:
                continue
            history = after_running(self.policy, run.history, now - run.started_at)
            if history is run.history:
                continue
            self.runs[iid] = dataclasses.replace(run, history=history)
            if run.history.crash_loop and run.lease is not None:
                log.info("lane stable again: crash loop over", instance_id=iid)
                await self.reports.write_state(iid, run.lease, crash_loop="0")

    def memory(self) -> dict[str, int]:
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
