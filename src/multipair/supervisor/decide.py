"""What the supervisor should do next: a pure function of what it knows (STYLE.md §7).

:func:`reconcile` takes the lanes that should run, this host's lane records,
the leases as read from Redis and the time, and returns actions. It does no
I/O and reads no clock, so every rule is tested without processes
(``tests/supervisor/test_decide.py``). The host (``host.py``) carries the
actions out and folds what happened back into the records.

Rules, for each lane (in instance-id order, so the output is deterministic):

A live process of ours (``pid`` set):

1. Already sent SIGKILL: wait for its exit.
2. The lease is not exactly the one we hold (taken, expired, or about to
   expire because renewals failed): **Kill** at once, ``lease lost``
   (DESIGN.md "One owner": a host that loses its lease stops the lane at once).
3. Already sent SIGTERM: **Kill** when the drain bound has passed.
4. Shutting down: **Stop** (``shutdown``). Not desired any more (removed or
   disabled): **Stop** (``disabled``). Ops asked for a restart: **Stop**
   (``restart``); it starts again once it has exited.
5. Heartbeat older than ``heartbeat_timeout_s`` (or no first heartbeat within
   ``start_timeout_s``): **Kill** (``heartbeat timeout``), restarted after
   backoff like a crash.

A lane of ours whose process has exited (record kept, lease still held):

6. Not desired, shutting down, or its lease gone to another host:
   **Release** (give the lease back if we hold it, forget the lane).
7. Restart asked by ops: **Restart** at once; else **Restart** when the
   backoff of :mod:`multipair.supervisor.policy` allows it.

A desired lane this host does not run:

8. **Start** it when nobody holds its lease (or the lease names this host,
   left over from an earlier run of this supervisor), while the host holds
   fewer lanes than its limit: ``capacity``, or its ``fair_share`` when the
   multi-host balancer (issue 7) passes one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from multipair.leases import Lease
from multipair.supervisor.policy import ExitHistory, RestartPolicy, restart_at

__all__ = [
    "Action",
    "Kill",
    "LaneRun",
    "Release",
    "Restart",
    "Signalled",
    "Start",
    "Stop",
    "StopReason",
    "reconcile",
]


class StopReason(StrEnum):
    """Why the supervisor stops or kills a lane (the ``reason`` of ``lane_stopped``)."""

    DISABLED = "disabled"
    """Removed from ``mp:lanes`` or its profile is not ``enabled`` (``lane stop``)."""
    SHUTDOWN = "shutdown"
    """The supervisor is stopping (SIGTERM)."""
    RESTART = "restart"
    """Ops asked for a restart through the control stream."""
    LEASE_LOST = "lease lost"
    """Another host holds the lane now, or our lease could not be renewed."""
    DRAIN_TIMEOUT = "drain timeout"
    """The lane did not exit within the drain bound after SIGTERM."""
    HEARTBEAT = "heartbeat timeout"
    """The lane stopped heartbeating: hung. Counted as a crash."""

    @property
    def is_failure(self) -> bool:
        """True when the exit it causes counts as a crash (backoff, crash loop)."""
        return self is StopReason.HEARTBEAT


class Signalled(Enum):
    """The strongest signal sent to a lane's live process."""

    TERM = "term"
    KILL = "kill"


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneRun:
    """This host's record of one lane: its process, lease and exit history.

    Times are on the caller's monotonic clock (``now`` of :func:`reconcile`).
    """

    instance_id: str
    pid: int | None = None
    """The live process; ``None`` once it exited (awaiting restart or release)."""
    started_at: float | None = None
    heartbeat_at: float | None = None
    """When a new ``heartbeat_at`` value of the current process was last seen."""
    lease: Lease | None = None
    """The lease this host holds for the lane."""
    lease_expires_at: float = math.inf
    """Latest time the lease can still be ours (last renewal sent + TTL)."""
    history: ExitHistory = field(default_factory=ExitHistory)
    jitter: float = 0.0
    """A draw from [0, 1) for the next restart's backoff (drawn by the caller)."""
    restarts: int = 0
    """Starts of this lane by this host after its first."""
    signalled: Signalled | None = None
    stop_reason: StopReason | None = None
    stop_deadline: float = math.inf
    """After SIGTERM: when to give up waiting and send SIGKILL."""
    restart_requested: bool = False

    @property
    def alive(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True, slots=True)
class Start:
    """Acquire the lease and spawn a lane this host does not run."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Restart:
    """Spawn again a lane of ours whose process exited (its lease is kept or re-taken)."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    """SIGTERM: the lane drains its in-flight transaction and exits."""

    instance_id: str
    reason: StopReason


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL at once."""

    instance_id: str
    reason: StopReason


@dataclass(frozen=True, slots=True)
class Release:
    """Forget a lane whose process has exited and give its lease back if still ours."""

    instance_id: str


Action = Start | Restart | Stop | Kill | Release


def reconcile(
    desired: Set[str],
    running: Mapping[str, LaneRun],
    leases: Mapping[str, Lease | None],
    now: float,
    *,
    host_id: str,
    capacity: int,
    policy: RestartPolicy,
    fair_share: int | None = None,
    accepting: bool = True,
) -> list[Action]:
    """The actions that bring this host closer to running exactly its share of ``desired``.

    ``running`` is this host's records (live or exited lanes it holds);
    ``leases`` the current lease of every lane in ``desired`` or ``running``
    (``None``: nobody holds it); ``accepting`` is False once shutdown began.
    See the module docstring for the rules.
    """
    actions: list[Action] = []
    for iid in sorted(running):
        run = running[iid]
        current = leases.get(iid)
        action = (
            _live(run, current, iid in desired, now, policy, accepting)
            if run.alive
            else _exited(run, current, iid in desired, now, host_id, policy, accepting)
        )
        if action is not None:
            actions.append(action)

    if not accepting:
        return actions
    limit = capacity if fair_share is None else min(capacity, fair_share)
    held = len(running)
    for iid in sorted(desired - running.keys()):
        if held >= limit:
            break
        current = leases.get(iid)
        if current is None or current.host_id == host_id:
            actions.append(Start(iid))
            held += 1
    return actions


def _live(
    run: LaneRun,
    current: Lease | None,
    desired: bool,
    now: float,
    policy: RestartPolicy,
    accepting: bool,
) -> Action | None:
    iid = run.instance_id
    if run.signalled is Signalled.KILL:
        return None
    if (
        run.lease is None
        or current != run.lease
        or now >= run.lease_expires_at - policy.lease_margin_s
    ):
        return Kill(iid, StopReason.LEASE_LOST)
    if run.signalled is Signalled.TERM:
        return Kill(iid, StopReason.DRAIN_TIMEOUT) if now >= run.stop_deadline else None
    if not accepting:
        return Stop(iid, StopReason.SHUTDOWN)
    if not desired:
        return Stop(iid, StopReason.DISABLED)
    if run.restart_requested:
        return Stop(iid, StopReason.RESTART)
    started = run.started_at if run.started_at is not None else now
    if run.heartbeat_at is None or run.heartbeat_at < started:
        if now - started > policy.start_timeout_s:
            return Kill(iid, StopReason.HEARTBEAT)
    elif now - run.heartbeat_at > policy.heartbeat_timeout_s:
        return Kill(iid, StopReason.HEARTBEAT)
    return None


def _exited(
    run: LaneRun,
    current: Lease | None,
    desired: bool,
    now: float,
    host_id: str,
    policy: RestartPolicy,
    accepting: bool,
) -> Action | None:
    iid = run.instance_id
    elsewhere = current is not None and current.host_id != host_id
    if not accepting or not desired or elsewhere:
        return Release(iid)
    if run.restart_requested or now >= restart_at(policy, run.history, run.jitter):
        return Restart(iid)
    return None
