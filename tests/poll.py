"""Wait for a condition nothing can be awaited for: poll it until it holds, or fail saying what.

Used where the only way to see a change is to look again (Redis written by
another process, a subprocess' state, in-process simulator counters). A
check returns a value: ``None`` or ``False`` mean "not yet", anything else is
the result (a check that must be truthy returns ``x or None``). On timeout an
``AssertionError`` (or ``error``, for helpers whose callers expect their own)
names ``what`` (a callable is asked then, for details seen only at the end) and
the last value seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["DEFAULT_TIMEOUT_S", "poll_until", "poll_until_sync"]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 20.0
INTERVAL_S = 0.05


What = str | Callable[[], str]
"""What is awaited; a callable is asked on timeout (for details seen only then)."""


def _timed_out(what: What, timeout: float, last: object, error: type[Exception]) -> Exception:
    said = what() if callable(what) else what
    return error(f"not within {timeout}s: {said} (last: {last!r})")


@overload
async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    what: What = ...,
    timeout: float = ...,
    *,
    interval: float = ...,
    error: type[Exception] = ...,
) -> T: ...


@overload
async def poll_until(
    check: Callable[[], T | None],
    what: What = ...,
    timeout: float = ...,
    *,
    interval: float = ...,
    error: type[Exception] = ...,
) -> T: ...


async def poll_until(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    what: What = "the condition",
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    interval: float = INTERVAL_S,
    error: type[Exception] = AssertionError,
) -> T:
    """Call ``check`` (sync or async) until it returns neither None nor False; that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        value: T | None = await result if inspect.isawaitable(result) else result
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, value, error)
        await asyncio.sleep(interval)


def poll_until_sync(
    check: Callable[[], T | None],
    what: What = "the condition",
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    interval: float = INTERVAL_S,
    error: type[Exception] = AssertionError,
) -> T:
    """:func:`poll_until` for a thread with no event loop (blocks while it waits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, value, error)
        time.sleep(interval)
