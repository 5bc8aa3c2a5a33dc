"""Keep the master key where only its holders can read it (DESIGN.md "Trust boundaries").

The master key is held by the supervisor, its lane template and the lanes,
and nowhere else: "never in a child's environment, never in a log, never in
Redis". This module holds the process-level half of that rule:

- :func:`private_env` / :func:`forget_secret_env`: the variables that can
  carry a secret (:data:`SECRET_ENV`) stay out of every environment handed
  to a child. The kernel shows a process's environment *as it was at
  exec* in ``/proc/<pid>/environ``; removing a variable afterwards does not
  change that page, so the only way to keep a secret out of a child's
  ``environ`` is never to exec the child with it. Settings travel to the
  lane template over its private socket instead (:mod:`multipair.supervisor.procs`).
- :func:`guard_process`: the process cannot be dumped. ``PR_SET_DUMPABLE``
  0 (Linux) makes ``/proc/<pid>/mem``, ``environ`` and ``maps`` owned by
  root and refuses ``ptrace`` from other processes of the same user, so a
  compromised process running as the same user cannot read the key out of
  a lane's memory; ``RLIMIT_CORE`` 0 (soft and hard) means a crash leaves no
  core file with the key in it. Both survive ``fork``, so the template's
  children are guarded from their first instruction. On systems without
  ``prctl`` only the core limit is set.

Linux-only parts are no-ops elsewhere; nothing here raises for a missing
feature, since a lane must not refuse to serve because a guard is
unavailable (:func:`process_guards` reports what holds, and lanes log it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "SECRET_ENV",
    "ProcessGuards",
    "forget_secret_env",
    "guard_process",
    "private_env",
    "process_guards",
]

SECRET_ENV: Final = (
    "MULTIPAIR_MASTER_KEY",
    "MULTIPAIR_MASTER_KEY_FILE",
    "MULTIPAIR_DEVICE_API_KEY",
    "MULTIPAIR_REDIS_URL",
    "MULTIPAIR_REDIS_PASSWORD",
    "MULTIPAIR_REDIS_SENTINEL_PASSWORD",
)
"""Variables that hold a secret, or point at one: the master key, its file, the
device-address API key, the Redis URL (which may carry a password) and the Redis
passwords of a Sentinel deployment (the data nodes', the Sentinels'). A process
that has read its settings needs none of them again, and no child gets them."""

_PR_SET_DUMPABLE: Final = 4
_PR_GET_DUMPABLE: Final = 3


@dataclass(frozen=True, slots=True)
class ProcessGuards:
    """What :func:`process_guards` found in this process."""

    dumpable: bool | None
    """``prctl(PR_GET_DUMPABLE)``; None where there is no ``prctl``."""
    core_limit: int | None
    """The soft ``RLIMIT_CORE`` in bytes (-1: unlimited); None where there is none."""


def private_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without :data:`SECRET_ENV`."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if name not in SECRET_ENV}


def forget_secret_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove :data:`SECRET_ENV` from ``environ`` (default ``os.environ``, which also
    unsets them for children started later without an explicit environment)."""
    target = os.environ if environ is None else environ
    for name in SECRET_ENV:
        target.pop(name, None)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def guard_process() -> None:
    """Make this process non-dumpable and unable to write a core file (see the module doc)."""
    libc = _libc()
    if libc is not None:
        # Refused only by kernels without the option: the limit below still holds.
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def process_guards() -> ProcessGuards:
    """Read back what :func:`guard_process` set (for the log line a lane writes at start)."""
    dumpable: bool | None = None
    libc = _libc()
    if libc is not None:
        answer = libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
        dumpable = None if answer < 0 else bool(answer)
    core_limit: int | None = None
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_CORE)
        core_limit = -1 if soft == resource.RLIM_INFINITY else soft
    return ProcessGuards(dumpable=dumpable, core_limit=core_limit)
