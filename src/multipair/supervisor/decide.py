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
   While Redis is away (``redis_away_since``) a lease that could not be
   renewed is not lost until ``policy.redis_ride_out_s`` into the outage
   (:func:`~multipair.supervisor.policy.lease_deadline`): nobody can take it
   meanwhile, and the host takes it back when Redis returns.
3. Already sent SIGTERM: **Kill** when the drain bound has passed.
4. Shutting down: **Stop** (``shutdown``). Not desired any more (removed or
   disabled): **Stop** (``disabled``). Ops asked for a restart: **Stop**
   (``restart``); it starts again once it has exited.
5. Heartbeat older than ``heartbeat_timeout_s`` (or no first heartbeat within
   ``start_timeout_s``): **Kill** (``heartbeat timeout``), restarted after
   backoff like a crash. Resident memory (``rss``) over ``memory_max``
   (``MULTIPAIR_LANE_MEMORY_MAX``; 0: no bound), checked first: **Stop**
   (``memory``): it finishes its running transaction and exits, and is
   restarted after backoff like a crash. Past :data:`MEMORY_KILL_FACTOR`
   times the bound, or at the drain bound, even while it drains: **Kill**
   (``memory``), so a runaway lane cannot take the host's memory meanwhile.

A lane of ours whose process has exited (record kept, lease still held):

6. Not desired, shutting down, or its lease gone to another host:
   **Release** (give the lease back if we hold it, forget the lane).
7. Restart asked by ops: **Restart** at once; else **Restart** when the
   backoff of :mod:`multipair.supervisor.policy` allows it.

A desired lane this host does not run:

8. **Start** it when nobody holds its lease (or the lease names this host,
   left over from an earlier run of this supervisor), while the host holds
   fewer lanes than its limit: ``capacity``, or its ``fair_share`` when the
   multi-host balancer (issue 7) passes one. A draining host starts nothing.
   Nor is a lane in ``warm`` started yet: its lease expired without being
   released and its state names a process that heartbeated moments ago (a
   frozen or cut-off host's lane, which lets go of the terminal only once its
   next fenced write is refused); it is started once that heartbeat is
   ``policy.takeover_quiet_s`` old.

Moving lanes to other hosts (issue 7, "Balancing" and ``host drain``):

9. A lane being handed off (``hand_off``) whose process has exited is
   **Released** at once, never restarted here: another host takes it.
   So is any exited lane of a draining host.
10. **Shed** (SIGTERM, then release once it exited) lanes that are *between
    transactions* (``idle``: the lane's state hash says ``flow`` ``idle``),
    at most ``policy.max_handoffs`` in flight at a time (balancing: or a
    tenth of the excess over the share, when that is more):

    - balancing: while the host holds more than its ``fair_share`` and the
      other live hosts have ``room_elsewhere`` for them;
    - draining (ops ``host drain``, ``draining_since`` set): every lane, one
      by one. Should no lane be seen idle for ``policy.drain_busy_after_s``
      (back-to-back transactions), a busy one is shed anyway: its process
      finishes the running transaction before it exits (the lane's own
      SIGTERM drain), so nothing is interrupted.

:func:`fair_shares` computes every live host's share from the hosts' heartbeats
(water-filling: ``ceil(total / hosts)`` each, hosts with a smaller capacity
saturated first), and :func:`balance` turns it into this host's
``fair_share`` and ``room_elsewhere``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

from multipair.leases import Lease
from multipair.supervisor.policy import ExitHistory, RestartPolicy, lease_deadline, restart_at

__all__ = [
    "HANDOFF_BATCH_DIVISOR",
    "MEMORY_KILL_FACTOR",
    "Action",
    "Balance",
    "HostView",
    "Kill",
    "LaneRun",
    "Release",
    "Restart",
    "Shed",
    "Signalled",
    "Start",
    "Stop",
    "StopReason",
    "balance",
    "fair_shares",
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
    REBALANCE = "rebalance"
    """Handed to a host with room: this one held more than its fair share."""
    HOST_DRAIN = "host drain"
    """Handed to another host: ops drain this one (``multipair host drain``)."""
    MEMORY = "memory"
    """Its resident memory passed ``MULTIPAIR_LANE_MEMORY_MAX``. Counted as a crash."""

    @property
    def is_failure(self) -> bool:
        """True when the exit it causes counts as a crash (backoff, crash loop)."""
        return self in (StopReason.HEARTBEAT, StopReason.MEMORY)


class Signalled(Enum):
    """The strongest signal sent to a lane's live process."""

    TERM = "term"
    KILL = "kill"


HANDOFF_BATCH_DIVISOR: Final = 10
"""Balancing moves up to (lanes over the share) / this many lanes at a time."""

MEMORY_KILL_FACTOR: Final = 2
"""A lane over its memory bound drains; past this many times the bound it is killed."""


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
    hand_off: bool = False
    """Shed: once its process exits, release the lease for another host (never restart)."""

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


@dataclass(frozen=True, slots=True)
class Shed:
    """Hand a lane to another host: SIGTERM (it finishes any running transaction and
    exits), then release its lease (``LaneRun.hand_off``)."""

    instance_id: str
    reason: StopReason


Action = Start | Restart | Stop | Kill | Release | Shed


# ---------------------------------------------------------------------------
# Fair shares across hosts


@dataclass(frozen=True, slots=True, kw_only=True)
class HostView:
    """One supervisor as its heartbeat in ``mp:hosts`` shows it."""

    host_id: str
    capacity: int
    lanes: int
    """Lanes it holds (running, or exited and held)."""
    accepting: bool
    """False while it drains or shuts down: it takes no lanes."""
    age_s: float
    """Seconds since its last heartbeat."""


@dataclass(frozen=True, slots=True)
class Balance:
    """What :func:`reconcile` needs to know about the other hosts."""

    fair_share: int
    """Most lanes this host should hold (0 while it is not accepting)."""
    room_elsewhere: int
    """Lanes the other live, accepting hosts can still take before reaching their share."""


def fair_shares(total: int, capacities: Mapping[str, int]) -> dict[str, int]:
    """Each host's share of ``total`` lanes: an even split, capped by capacity.

    Water-filling: find the level ``L`` with ``sum(min(capacity, L)) == total``;
    each host's share is ``min(capacity, ceil(L))``. With equal capacities
    that is ``ceil(total / hosts)``; a host with less room than that is
    filled, and the rest is split evenly over the others. The shares add up
    to at least ``total`` whenever the capacities do, so every lane has a place.
    """
    if not capacities:
        return {}
    remaining = max(total, 0)
    level = math.inf
    caps = sorted(max(c, 0) for c in capacities.values())
    for index, cap in enumerate(caps):
        hosts_left = len(caps) - index
        if cap * hosts_left >= remaining:
            level = remaining / hosts_left
            break
        remaining -= cap
    ceiling = math.inf if level == math.inf else math.ceil(level)
    return {host: int(min(max(cap, 0), ceiling)) for host, cap in capacities.items()}


def balance(
    total: int,
    *,
    host_id: str,
    capacity: int,
    accepting: bool,
    hosts: Iterable[HostView],
    live_within_s: float,
) -> Balance:
    """This host's fair share of ``total`` desired lanes and the room the others have.

    Live hosts are those whose heartbeat is younger than ``live_within_s``
    and that accept lanes; this host counts itself (with ``capacity``)
    while ``accepting``, whatever its own entry says.
    """
    others = {
        h.host_id: h
        for h in hosts
        if h.host_id != host_id and h.accepting and h.age_s < live_within_s
    }
    capacities = {hid: h.capacity for hid, h in others.items()}
    if accepting:
        capacities[host_id] = capacity
    shares = fair_shares(total, capacities)
    room = sum(max(shares[hid] - h.lanes, 0) for hid, h in others.items())
    return Balance(fair_share=shares.get(host_id, 0), room_elsewhere=room)


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
    room_elsewhere: int = 0,
    idle: Set[str] = frozenset(),
    draining_since: float | None = None,
    warm: Set[str] = frozenset(),
    rss: Mapping[str, int] | None = None,
    memory_max: int = 0,
    redis_away_since: float | None = None,
) -> list[Action]:
    """The actions that bring this host closer to running exactly its share of ``desired``.

    ``running`` is this host's records (live or exited lanes it holds);
    ``leases`` the current lease of every lane in ``desired`` or ``running``
    (``None``: nobody holds it); ``accepting`` is False once shutdown began.
    Balancing (issue 7): ``fair_share`` and ``room_elsewhere`` come from
    :func:`balance`; ``idle`` names the lanes whose state hash says they are
    between transactions; ``draining_since`` is when ops asked this host to
    drain (None: it is not draining); ``warm`` names free lanes whose previous
    process may still hold its terminal. ``rss`` is the resident memory in
    bytes of live lanes (those missing were not measured) and ``memory_max``
    the bound on it (0: none). ``redis_away_since`` is when this host's Redis
    calls started failing (None: Redis answers). See the module docstring for
    the rules.
    """
    draining = draining_since is not None
    actions: list[Action] = []
    quiet: list[str] = []  # healthy live lanes, candidates for shedding
    for iid in sorted(running):
        run = running[iid]
        current = leases.get(iid)
        memory = None if rss is None or memory_max <= 0 else rss.get(iid)
        action = (
            _live(
                run,
                current,
                iid in desired,
                now,
                policy,
                accepting,
                memory,
                memory_max,
                redis_away_since,
            )
            if run.alive
            else _exited(
                run, current, iid in desired, now, host_id, policy, accepting and not draining
            )
        )
        if action is not None:
            actions.append(action)
        elif _settled(run):
            quiet.append(iid)

    if not accepting:
        return actions
    actions += _shed(running, quiet, idle, now, policy, fair_share, room_elsewhere, draining_since)
    if draining:
        return actions
    limit = capacity if fair_share is None else min(capacity, fair_share)
    held = len(running)
    for iid in sorted(desired - running.keys()):
        if held >= limit:
            break
        current = leases.get(iid)
        if (current is None and iid not in warm) or (
            current is not None and current.host_id == host_id
        ):
            actions.append(Start(iid))
            held += 1
    return actions


def _settled(run: LaneRun) -> bool:
    """A live lane that is up (heartbeat seen from this process) and not being stopped."""
    return (
        run.alive
        and run.signalled is None
        and not run.hand_off
        and run.heartbeat_at is not None
        and run.started_at is not None
        and run.heartbeat_at >= run.started_at
    )


def _shed(
    running: Mapping[str, LaneRun],
    quiet: list[str],
    idle: Set[str],
    now: float,
    policy: RestartPolicy,
    fair_share: int | None,
    room_elsewhere: int,
    draining_since: float | None,
) -> list[Action]:
    in_flight = sum(1 for run in running.values() if run.hand_off)
    if not quiet:
        return []
    if draining_since is not None:
        reason, wanted = StopReason.HOST_DRAIN, len(quiet)
        limit = policy.max_handoffs
    elif fair_share is not None:
        # Lanes already on their way out will fill some of the room elsewhere.
        held = len(running) - in_flight
        reason, wanted = StopReason.REBALANCE, min(held - fair_share, room_elsewhere - in_flight)
        # Far above its share (a host rejoined, a new one came up), move a
        # tenth of the excess at a time: one by one, 300 lanes took minutes.
        limit = max(policy.max_handoffs, (held - fair_share) // HANDOFF_BATCH_DIVISOR)
    else:
        return []
    slots = limit - in_flight
    if slots <= 0:
        return []
    chosen = [iid for iid in quiet if iid in idle]
    if (
        not chosen
        and draining_since is not None
        and in_flight == 0
        and now >= draining_since + policy.drain_busy_after_s
    ):
        chosen = quiet  # never idle when looked at: its own drain finishes the transaction
    return [Shed(iid, reason) for iid in chosen[: max(min(slots, wanted), 0)]]


def _live(
    run: LaneRun,
    current: Lease | None,
    desired: bool,
    now: float,
    policy: RestartPolicy,
    accepting: bool,
    memory: int | None = None,
    memory_max: int = 0,
    redis_away_since: float | None = None,
) -> Action | None:
    iid = run.instance_id
    if run.signalled is Signalled.KILL:
        return None
    if (
        run.lease is None
        or current != run.lease
        or now >= lease_deadline(policy, run.lease_expires_at, redis_away_since)
    ):
        return Kill(iid, StopReason.LEASE_LOST)
    runaway = memory is not None and memory > memory_max * MEMORY_KILL_FACTOR
    if run.signalled is Signalled.TERM:
        if runaway:
            return Kill(iid, StopReason.MEMORY)
        if now >= run.stop_deadline:
            # A lane stopped for its memory stays a memory failure when it is killed.
            memory_stop = run.stop_reason is StopReason.MEMORY
            return Kill(iid, StopReason.MEMORY if memory_stop else StopReason.DRAIN_TIMEOUT)
        return None
    if not accepting:
        return Stop(iid, StopReason.SHUTDOWN)
    if not desired:
        return Stop(iid, StopReason.DISABLED)
    if run.restart_requested:
        return Stop(iid, StopReason.RESTART)
    if runaway:
        return Kill(iid, StopReason.MEMORY)
    if memory is not None and memory > memory_max:
        return Stop(iid, StopReason.MEMORY)
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
    if not accepting or not desired or elsewhere or run.hand_off:
        return Release(iid)
    if run.restart_requested or now >= restart_at(policy, run.history, run.jitter):
        return Restart(iid)
    return None
