"""When to restart a lane that exited, and when it is in a crash loop (pure).

Rules (DESIGN.md "Process model", STYLE.md §6):

- A lane that exits unasked for the first time in a row is restarted at
  once: a one-off crash (a ``kill -9``, the OOM killer) must cost the POS
  as little as possible, and the new process recovers any transaction in
  flight. Its *n*-th exit in a row (n ≥ 2) waits ``backoff_base_s × 2^(n-2)``
  seconds, capped at ``backoff_cap_s``; that delay is shortened by up to
  ``jitter`` of itself, by a random number the caller draws and passes in
  (so every function here is deterministic).
- ``crash_loop_exits`` exits within ``crash_loop_window_s`` put the lane in
  ``crash_loop``: it is then retried only every ``crash_loop_retry_s``.
- An exit with a code in ``fatal_exit_codes`` (the worker's 2: configuration
  or usage error, which a quick retry cannot fix) is a crash loop at once.
- A run that lasts ``stable_after_s`` wipes the history: the next exit
  starts again from the shortest delay, and ``crash_loop`` ends. Until then
  ``crash_loop`` stays on, so slow retries do not slide back to fast ones.
- A lane whose lease could not be renewed is killed ``lease_margin_s``
  before the lease can expire (:func:`lease_deadline`), except while Redis
  is away: then nobody can take the lane, the lanes ride the outage out and
  the host takes its leases back when Redis returns, so the kill waits until
  Redis has been away ``redis_ride_out_s`` (the bound for a host cut off
  from a Redis that other hosts still reach).

All times are seconds on one monotonic clock chosen by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from multipair.leases import DEFAULT_LEASE_TTL_MS, DEFAULT_RENEW_EVERY_MS

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT_S",
    "ExitHistory",
    "RestartPolicy",
    "after_running",
    "lease_deadline",
    "record_exit",
    "restart_at",
    "restart_delay",
    "tick_period",
]

TICK_MAX_S: Final = 2.0
"""The longest a host's decision loop sleeps between two looks at Redis."""
TICK_S_PER_LANE: Final = 0.002
"""How the loop's period grows with the lanes it watches (1,000 lanes: 2 s)."""

DEFAULT_DRAIN_TIMEOUT_S: Final = 30.0
"""The lane's own drain bound (``MULTIPAIR_DRAIN_TIMEOUT``), which the supervisor waits out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """Every number the supervisor decides with; defaults are the documented ones."""

    backoff_base_s: float = 0.5
    """Delay before the first restart after an exit."""
    backoff_cap_s: float = 30.0
    """Longest delay of the exponential backoff."""
    jitter: float = 0.25
    """Each delay is shortened by up to this fraction of itself (0 turns jitter off)."""
    crash_loop_exits: int = 5
    """This many exits ..."""
    crash_loop_window_s: float = 60.0
    """... within this many seconds mean ``crash_loop``."""
    crash_loop_retry_s: float = 60.0
    """Retry period of a lane in ``crash_loop``."""
    stable_after_s: float = 60.0
    """A run this long forgives every earlier exit."""
    fatal_exit_codes: frozenset[int] = field(default_factory=lambda: frozenset({2}))
    """Exit codes that mean "misconfigured": straight to ``crash_loop``."""
    heartbeat_timeout_s: float = 10.0
    """A lane whose heartbeat (every 2 s) is older than this is hung: kill and restart it."""
    start_timeout_s: float = 20.0
    """Time a new lane process has to write its first heartbeat."""
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    """How long a lane may drain after SIGTERM (the lane's own bound) ..."""
    stop_margin_s: float = 5.0
    """... plus this margin, before the supervisor sends SIGKILL."""
    lease_ttl_s: float = DEFAULT_LEASE_TTL_MS / 1000
    """TTL of every lease this host takes."""
    renew_every_s: float = DEFAULT_RENEW_EVERY_MS / 1000
    """Renewal period of the leases (four renewals per TTL)."""
    lease_margin_s: float = 1.5
    """A lane whose lease could not be renewed is killed this long before it can expire,
    so it never runs while another host may already hold the lane (issue 7)."""
    redis_ride_out_s: float = 60.0
    """While this host cannot reach Redis, its lanes keep running (their leases may lapse;
    they are taken back, same token, when Redis returns) until Redis has been away this
    long (issue 13). Only then are they killed as above: a host cut off from a Redis that
    other hosts still reach lets go of its terminals after this bound at the latest."""
    host_live_s: float = 6.0
    """A host whose ``mp:hosts`` heartbeat (every 2 s) is younger than this counts as live
    when lanes are shared out; older, its share goes to the others."""
    takeover_quiet_s: float = 3.5
    """A free lane whose state still names a process (``pid``) that heartbeated less than
    this long ago is not started yet: its lease expired unreleased (a frozen host), and that
    process holds the terminal until its next heartbeat write (every 2 s) is refused."""
    max_handoffs: int = 1
    """Lanes one host hands to others at a time (balancing and drain: one by one)."""
    drain_busy_after_s: float = 10.0
    """A draining host that has seen none of its lanes between transactions for this long
    sheds a busy one: that lane finishes its transaction before it exits."""

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.crash_loop_exits < 1:
            raise ValueError("crash_loop_exits must be at least 1")
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ValueError("need 0 < backoff_base_s <= backoff_cap_s")
        if self.max_handoffs < 1:
            raise ValueError("max_handoffs must be at least 1")
        if not 0 < self.renew_every_s < self.lease_ttl_s - self.lease_margin_s:
            raise ValueError("renew_every_s must leave room inside lease_ttl_s - lease_margin_s")

    @property
    def stop_timeout_s(self) -> float:
        """SIGTERM to SIGKILL: the drain bound plus the margin."""
        return self.drain_timeout_s + self.stop_margin_s


@dataclass(frozen=True, slots=True)
class ExitHistory:
    """What a lane's earlier exits mean for its next restart. Build with :func:`record_exit`."""

    streak: int = 0
    """Exits since the last stable run."""
    recent: tuple[float, ...] = ()
    """When the exits of the streak inside the crash-loop window happened, oldest first."""
    crash_loop: bool = False
    last_exit_at: float | None = None


def lease_deadline(
    policy: RestartPolicy, lease_expires_at: float, redis_away_since: float | None
) -> float:
    """When a live lane whose lease was not renewed must be killed.

    ``lease_margin_s`` before its lease can expire; while Redis is away
    (``redis_away_since``: when this host's calls first failed), not before
    ``redis_ride_out_s`` into the outage.
    """
    deadline = lease_expires_at - policy.lease_margin_s
    if redis_away_since is not None:
        deadline = max(deadline, redis_away_since + policy.redis_ride_out_s)
    return deadline


def record_exit(
    policy: RestartPolicy,
    history: ExitHistory,
    *,
    at: float,
    uptime: float,
    exit_code: int | None = None,
) -> ExitHistory:
    """The history after one more unasked exit (at ``at``, after running ``uptime`` s)."""
    if uptime >= policy.stable_after_s:
        history = ExitHistory()
    recent = (*(t for t in history.recent if t > at - policy.crash_loop_window_s), at)
    crash_loop = (
        history.crash_loop
        or len(recent) >= policy.crash_loop_exits
        or (exit_code is not None and exit_code in policy.fatal_exit_codes)
    )
    return ExitHistory(
        streak=history.streak + 1,
        recent=recent[-policy.crash_loop_exits :],
        crash_loop=crash_loop,
        last_exit_at=at,
    )


def after_running(policy: RestartPolicy, history: ExitHistory, uptime: float) -> ExitHistory:
    """The history of a lane that has been running ``uptime`` s: forgiven once stable."""
    if history.streak and uptime >= policy.stable_after_s:
        return ExitHistory()
    return history


def restart_delay(policy: RestartPolicy, history: ExitHistory, jitter: float) -> float:
    """Seconds from the last exit to the next start; ``jitter`` is a draw from [0, 1)."""
    if history.streak == 0:
        return 0.0
    if history.crash_loop:
        return policy.crash_loop_retry_s
    if history.streak == 1:
        return 0.0  # a first crash is restarted at once
    # 2^(n-2) overflows float for huge n; the cap is reached long before.
    exponent = min(history.streak - 2, 64)
    delay = min(policy.backoff_cap_s, policy.backoff_base_s * math.ldexp(1.0, exponent))
    return delay * (1.0 - policy.jitter * min(max(jitter, 0.0), 1.0))


def restart_at(policy: RestartPolicy, history: ExitHistory, jitter: float) -> float:
    """When the lane may start again (``-inf``: at once, it never exited)."""
    if history.last_exit_at is None:
        return -math.inf
    return history.last_exit_at + restart_delay(policy, history, jitter)


def tick_period(tick_s: float, lanes: int) -> float:
    """Seconds between two ticks of a host watching ``lanes`` lanes (at least ``tick_s``).

    Each tick reads a profile, a lease and a heartbeat per lane: at 0.5 s and
    1,000 lanes that alone is a fifth of a core for the supervisor and 6,000
    commands a second for Redis, per host. So the period grows with the
    fleet, up to :data:`TICK_MAX_S`. What must be prompt does not wait for
    it: an exit, an ops message or a signal wakes the loop at once, leases
    are renewed and watched by their own loops, and a dead host's lanes are
    still taken within the lease TTL plus one period (6 + 2 s).
    """
    return max(tick_s, min(TICK_MAX_S, lanes * TICK_S_PER_LANE))
