"""Redis away: wait, try again (DESIGN.md "Availability"; the lane's module docstring).

A Redis outage is ridden out, never turned into an exit. Every Redis call of
the lane goes through :meth:`RedisWait.until`: an error that says Redis
cannot serve now (:func:`~multipair.worker.retry.is_redis_away`) is waited
out with jittered backoff and the call tried again; a lost lease still stops
the lane at once. This module also keeps the one record of whether Redis is
away and when it came back, which decides whether a lapsed lease is waited
on (:data:`LAPSED_WAIT_S`).

A durable write that landed but was not confirmed on enough replicas
(:class:`~multipair.store.durable.NotConfirmed`, issue 19) is waited out
the same way: the same write (same write id) is applied again and
confirmed again until it is, while the lane keeps it in memory. Redis
answered, so that is not counted as Redis away.

After an outage, the first call of the lane waits for one check of *which*
primary answers (:attr:`RedisWait.on_back`, the lane's
:meth:`~multipair.worker.failover.PrimaryWatch.after_outage`): a new primary
may lack the lane's latest writes, and the lane re-reads and writes back
what it needs before anything else goes on (docs/deploy-ha.md "After a
failover"). Once per outage, not per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar, cast

from multipair.leases import LeaseLapsed
from multipair.logs import get_logger
from multipair.store.durable import NotConfirmed
from multipair.worker.clock import Clock
from multipair.worker.retry import RedisBackoff, is_redis_away, redis_delays

__all__ = ["LAPSED_WAIT_S", "RedisWait", "Stopping", "first", "last_line", "quiet"]

log = get_logger("multipair.worker.lane")

LAPSED_WAIT_S: Final = 10.0
"""After Redis comes back, how long a write refused for a lapsed lease waits for its owner."""
_SLOW_CALL_S: Final = 2.0
"""A Redis call of the lane that took longer than this met a silent Redis (see ``note_slow``)."""
_AWAY_QUIET_S: Final = 5.0
"""Redis away again this soon after it came back: a stale pooled connection, not logged."""

_T = TypeVar("_T")


class Stopping(Exception):
    """The lane stops while a task waits (for the terminal, or for Redis): leave it pending."""


async def first(*aws: Any) -> None:
    """Wait until the first of ``aws`` finishes; cancel and await the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def quiet(loop: Awaitable[None]) -> None:
    """Run one of the lane's loops; one that meets the stop in a Redis wait just ends."""
    with contextlib.suppress(Stopping):
        await loop


def last_line(exc: BaseException) -> str:
    """The last line of ``exc``'s traceback (``KeyError: 'x'``), cut to a readable length."""
    line = traceback.format_exception_only(exc)[-1].strip()
    return line if len(line) <= 300 else line[:297] + "..."


class RedisWait:
    """Calls to Redis tried again while it is away; whether it is away, and since when."""

    def __init__(self, clock: Clock, backoff: RedisBackoff, stopped: asyncio.Event) -> None:
        self._clock = clock
        self._backoff = backoff
        self._stopped = stopped
        self._away_since: float | None = None  # Redis unreachable since (monotonic)
        self._back_at: float | None = None  # when Redis last came back (monotonic)
        self._away_logged = False
        self._unconfirmed = False  # a durable write is waiting for the replicas
        self.on_back: Callable[[], Awaitable[None]] | None = None
        """Run once after each outage, before any other call goes on (see the module doc)."""
        self._outages = 0  # outages seen (or silent calls): a check is due when it moves
        self._checked = 0  # the outage count the last completed check covered
        self._check_lock = asyncio.Lock()
        self._checker: asyncio.Task[Any] | None = None

    async def until(
        self, call: Callable[[], Awaitable[_T]], *, until: asyncio.Event | None = None
    ) -> _T:
        """``call()``, tried again until Redis answers it; :class:`Stopping` once the lane stops.

        Only "Redis is away" is waited out (:meth:`must_wait`); every other
        error, a lost lease first of all, propagates at once. ``call`` must be
        safe to repeat: a read, an idempotent write, or a write with a write
        id (``Lane.apply``, :meth:`TxStore.begin` with a ticket). ``until``
        (default: the stop) ends the wait.
        """
        stop = self._stopped if until is None else until
        delays: Iterator[float] | None = None
        while True:
            answered, result = await self.best_effort(call)
            if answered:
                return cast(_T, result)
            if stop.is_set():
                raise Stopping
            if delays is None:
                delays = redis_delays(self._backoff)
            await first(asyncio.sleep(next(delays)), stop.wait())
            if stop.is_set():
                raise Stopping

    def must_wait(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "wait and try again": Redis away, or our lease just lapsed.

        A lease refused as lapsed (:class:`LeaseLapsed`: no lease at all) is
        waited on only within :data:`LAPSED_WAIT_S` of Redis coming back: it
        expired during the outage and our supervisor is taking it back. Any
        other time it means the supervisor stopped renewing (frozen, gone):
        the lane stops, as for any lost lease.
        """
        if isinstance(exc, NotConfirmed):
            if not self._unconfirmed:
                self._unconfirmed = True
                log.warning(
                    "a write is not confirmed on the replicas: kept, written again until it is",
                    error=last_line(exc),
                )
            return True
        if isinstance(exc, LeaseLapsed):
            self.answered()  # a refusal is an answer: Redis is here
            back = self._back_at
            return back is not None and self._clock.monotonic() - back < LAPSED_WAIT_S
        if is_redis_away(exc):
            if self._away_since is None:
                now = self._clock.monotonic()
                self._away_since = now
                self._outages += 1
                # Each pooled connection that died with the server fails once
                # more after Redis is back: not a new outage worth a warning.
                back = self._back_at
                self._away_logged = back is None or now - back > _AWAY_QUIET_S
                if self._away_logged:
                    log.warning(
                        "Redis away: keeping the terminal, taking no commands, retrying",
                        error=last_line(exc),
                    )
            return True
        return False

    def note_slow(self, started: float) -> None:
        """A call that hung this long met Redis silent (a cut link): it was away, now back.

        Then, as after an error, a lease found lapsed is waited on: our
        supervisor could not renew it either, and takes it back now.
        """
        now = self._clock.monotonic()
        if now - started > _SLOW_CALL_S:
            self._back_at = now
            self._outages += 1

    def answered(self) -> None:
        """Redis answered a call: if it was away, it is back."""
        if self._unconfirmed:
            self._unconfirmed = False
            log.warning("the write is confirmed on the replicas")
        since = self._away_since
        if since is not None:
            self._away_since = None
            self._back_at = self._clock.monotonic()
            if self._away_logged:
                log.warning("Redis back", away_s=round(self._back_at - since, 3))

    async def best_effort(self, call: Callable[[], Awaitable[_T]]) -> tuple[bool, _T | None]:
        """``call()`` once: (True, result), or (False, None) when Redis is away (not waited).

        After an outage the primary check (:attr:`on_back`) runs first; while
        it cannot complete, nothing else is tried.
        """
        if self._outages != self._checked and not await self._check_primary():
            return False, None
        started = self._clock.monotonic()
        try:
            result = await call()
        except Exception as exc:
            self.note_slow(started)
            if not self.must_wait(exc):
                raise
            return False, None
        self.answered()
        return True, result

    async def _check_primary(self) -> bool:
        """Run :attr:`on_back` once for the outages seen; False while it cannot complete.

        One task runs it; the others do not wait for it (their call counts as
        not answered yet, as while Redis is away: a pong never waits behind
        it). Its own calls (through :meth:`until`, nested) go on.
        """
        hook = self.on_back
        if hook is None or asyncio.current_task() is self._checker:
            return True
        if self._check_lock.locked():
            return False
        async with self._check_lock:
            outages = self._outages
            if outages == self._checked:
                return True
            self._checker = asyncio.current_task()
            try:
                await hook()
            except Exception as exc:
                if not self.must_wait(exc):
                    raise
                return False
            finally:
                self._checker = None
            self._checked = outages
            return True
