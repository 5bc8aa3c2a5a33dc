"""Rejected terminal frames: counted, logged sparingly, raised as one alarm per burst.

A hostile peer on the shop network can send thousands of forged or broken
frames a second. Each one is dropped by the session (``FrameRejected``); what
the lane does with the fact is decided here, without I/O:

- every rejection is counted (the lane writes the count to its state hash);
- a log line is written for the first rejection of a kind, then at most once
  a minute per kind, carrying how many were left out in between, so an attack
  cannot flood the logs;
- when ``burst`` rejections (any kind) land within ``window_s``, one alarm is
  raised (an ``error`` event with reason ``link_tampering``), and no second
  one until ``window_s`` has passed since the first.

Time is the caller's monotonic clock in seconds.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final

__all__ = ["BURST", "WINDOW_S", "RejectionMonitor", "Verdict"]

BURST: Final = 10
"""Rejections within :data:`WINDOW_S` that raise one alarm."""

WINDOW_S: Final = 60.0
"""The alarm window, and the minimum gap between two log lines of one kind."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about one rejected frame."""

    log: bool
    """Write a log line for it now."""
    suppressed: int
    """Rejections of the same kind left out of the log since its last line."""
    alarm: dict[str, int] | None
    """Set when this rejection completes a burst: the count per kind in the window."""


@dataclass(slots=True)
class _Kind:
    logged_at: float
    suppressed: int = 0


@dataclass(slots=True)
class RejectionMonitor:
    """Decides, per rejected frame, whether to log and whether to raise the alarm."""

    burst: int = BURST
    window_s: float = WINDOW_S
    total: int = 0
    _kinds: dict[str, _Kind] = field(default_factory=dict)
    _recent: deque[tuple[float, str]] = field(default_factory=deque)
    _alarmed_at: float | None = None

    def note(self, kind: str, now: float) -> Verdict:
        """Count one rejected frame of ``kind`` at ``now``."""
        self.total += 1
        log, suppressed = self._log_decision(kind, now)
        recent = self._recent
        recent.append((now, kind))
        while recent and now - recent[0][0] >= self.window_s:
            recent.popleft()
        alarm: dict[str, int] | None = None
        quiet = self._alarmed_at is None or now - self._alarmed_at >= self.window_s
        if len(recent) >= self.burst and quiet:
            self._alarmed_at = now
            alarm = dict(Counter(k for _, k in recent))
        return Verdict(log=log, suppressed=suppressed, alarm=alarm)

    def _log_decision(self, kind: str, now: float) -> tuple[bool, int]:
        seen = self._kinds.get(kind)
        if seen is None:
            self._kinds[kind] = _Kind(logged_at=now)
            return True, 0
        if now - seen.logged_at >= self.window_s:
            suppressed, seen.suppressed, seen.logged_at = seen.suppressed, 0, now
            return True, suppressed
        seen.suppressed += 1
        return False, 0
