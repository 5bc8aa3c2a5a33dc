"""Retry policy for the lane's terminal link: pure, injected, tested without sockets.

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

from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from multipair.exceptions import ConfigurationError

__all__ = ["ReconnectPolicy", "is_retryable", "reconnect_delays"]


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
