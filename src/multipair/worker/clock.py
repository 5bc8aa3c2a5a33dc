"""The lane's one clock: wall time for the SPI session and events, monotonic for intervals.

Every time the lane reads goes through one injected :class:`Clock`
(``LaneDeps.clock``), so a test can drive it and no part of the lane reads
``time`` or ``datetime`` behind the others' back. Timeouts that asyncio
arms itself (``asyncio.timeout``) keep the event loop's clock: they are
waits, not reads.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol

from multipair import broker_schema as bs

__all__ = ["Clock", "SystemClock", "iso_now", "utc_now"]


class Clock(Protocol):
    """Where the lane reads the time."""

    def time(self) -> float:
        """Wall time, seconds since the epoch (the session's ``now``)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for intervals (durations, backoff, rate limits)."""
        ...


class SystemClock:
    """The machine's clocks (``time.time``, ``time.monotonic``)."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


def utc_now(clock: Clock) -> _dt.datetime:
    """The clock's wall time as an aware UTC datetime (event ``at``, ``expires_at`` checks)."""
    return _dt.datetime.fromtimestamp(clock.time(), _dt.UTC)


def iso_now(clock: Clock) -> str:
    """The clock's wall time as the broker's ISO-8601 UTC text."""
    return bs.format_time(utc_now(clock))
