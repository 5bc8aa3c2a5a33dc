"""Named crash points for chaos tests: ``MULTIPAIR_FAILPOINTS=a,b`` kills the process there.

A failpoint is a place in the code where a test needs a process to die at an
exact step (``kill -9`` between "outcome received" and "outcome published",
say), which no outside timing can hit reliably. When the environment names
the point, :func:`hit` sends SIGKILL to its own process: the real thing, with
no cleanup, no ``finally``, no flushing. Unset (production), :func:`hit` is a
set lookup.

Points in use (grep ``failpoints.hit``): ``lane.before_send``,
``lane.after_send``, ``lane.awaiting_signature``,
``lane.before_outcome_published``, ``lane.after_roll_persisted``,
``lane.control_command`` (a control command is about to run);
``jobs.settle_before_send``, ``jobs.settle_after_send`` (a fleet settlement
job, around adding a lane's ``settle``: ``multipair.jobs.fleet``).

A *fault* point (:func:`fault`) raises :class:`InjectedFault` instead: an
unexpected error, as a bug would raise, for tests of containment
(``lane.control_command_fails``).
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ["ENV", "InjectedFault", "armed", "fault", "hit"]

ENV: Final = "MULTIPAIR_FAILPOINTS"

_ARMED: Final = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def armed(name: str) -> bool:
    """Whether the environment asked to crash at ``name``."""
    return name in _ARMED


def hit(name: str) -> None:
    """Die at once with SIGKILL if ``name`` is armed; otherwise do nothing."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


class InjectedFault(Exception):
    """Raised at an armed fault point: stands for a bug nobody foresaw (not a MultipairError)."""


def fault(name: str) -> None:
    """Raise :class:`InjectedFault` if ``name`` is armed; otherwise do nothing."""
    if name in _ARMED:
        raise InjectedFault(f"failpoint {name}")
