"""Retry policies of the lane: pure, injected, tested without sockets.

**Redis away** (issue 13). :func:`is_redis_away` sorts a Redis error: the
server cannot be reached or cannot serve right now (connection refused or
reset, a timeout, still loading its AOF, a replica that will not take
writes, a cluster failing over) means *wait and try again*; anything else
is an answer and propagates. A lane waiting for Redis pauses
:func:`redis_delays` between tries: 0.05 s doubling up to 1 s, each drawn
at random below that bound ("full jitter"), so a store full of lanes does
not come back in lockstep, and every lane is back within about a second
of Redis.

**The terminal link.**

Rules (PROTOCOL.md §5.5, §6.1, §13.8):

- Between two connection attempts the lane pauses 1.5 s, the 2.9.13 client's
  reconnect pause, plus up to 20 % jitter so a store full of lanes that lost
  their network together does not reconnect in lockstep.
- While auto address resolution is on, every 4th consecutive failed attempt
  asks the device-address service first (the counter goes 1, 2, 3, then
  resolves and resets; a successful connect resets it).
- A failure is *retryable* (the terminal may come back: refused, reset,
  timeout, DNS, TLS handshake, a 5xx on upgrade) or *fatal for this
  configuration* (a malformed address or URL): a fatal one is reported and
  the lane waits for its profile to change instead of hammering.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from multipair.exceptions import ConfigurationError, RetryLater
from multipair.redis_conn import AWAY_REPLIES

__all__ = [
    "ReconnectPolicy",
    "RedisBackoff",
    "is_redis_away",
    "is_retryable",
    "reconnect_delays",
    "redis_delays",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisBackoff:
    """How a lane paces its tries while Redis is away."""

    first_s: float = 0.05
    cap_s: float = 1.0


def redis_delays(policy: RedisBackoff, rng: random.Random | None = None) -> Iterator[float]:
    """Endless pauses: the n-th drawn uniformly from [0, min(cap, first × 2^n)) (full jitter)."""
    rng = rng or random.Random()
    bound = policy.first_s
    while True:
        yield rng.uniform(0.0, bound)
        bound = min(policy.cap_s, bound * 2)


# Error replies that mean "not now" rather than "no": redis-py raises most of them as
# their own classes (BusyLoadingError is a ConnectionError), the rest as ResponseError.


def is_redis_away(exc: BaseException) -> bool:
    """True when ``exc`` says Redis cannot serve now (wait and retry), not an answer.

    Covers connection errors and timeouts of redis-py (``BusyLoadingError``,
    "LOADING", included), ``MASTERDOWN``/``READONLY``/``TRYAGAIN``/
    ``CLUSTERDOWN``/``UNBLOCKED`` replies, and the stores' :class:`RetryLater` (their
    wrapping of the same). Never a lost lease, never asyncio's own timeout
    (that one is a terminal that did not answer).
    """
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | RetryLater):
        return True
    if isinstance(exc, ClusterDownError | TryAgainError | SlotNotCoveredError | ReadOnlyError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(AWAY_REPLIES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """How the lane paces reconnects and address lookups."""

    pause_s: float = 1.5
    jitter: float = 0.2
    attempts_before_lookup: int = 3


def reconnect_delays(policy: ReconnectPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """Endless pauses before each reconnect: ``pause_s`` plus up to ``jitter`` of it."""
    rng = rng or random.Random()
    while True:
        yield policy.pause_s * (1.0 + rng.uniform(0.0, policy.jitter))


def is_retryable(exc: BaseException) -> bool:
    """Sort a connection failure: True when trying again later may succeed."""
    if isinstance(exc, ConfigurationError | InvalidURI):
        return False
    if isinstance(exc, ssl.SSLCertVerificationError):
        # A certificate that does not verify will not verify next time either,
        # but a terminal may be re-provisioned: keep trying, slowly, and report.
        return True
    return isinstance(exc, OSError | TimeoutError | InvalidHandshake | WebSocketException)
