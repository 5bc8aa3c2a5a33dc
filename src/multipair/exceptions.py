"""Every error multipair raises, sorted by who is to blame.

The tree (read it before adding a class; blame decides what a caller does)::

    MultipairError                   anything of ours
    ├── InternalError                our bug: a broken invariant; report and restart
    ├── ProtocolError                the SPI protocol was broken
    │   ├── LocalProtocolError       we (or our caller) asked for an illegal move,
    │   │   │                        e.g. start a purchase while not Idle
    │   │   └── InvalidRequest       a request that cannot be built (bad amount,
    │   │                            tip with cashout, a 5-digit auth code)
    │   └── RemoteProtocolError      the peer (terminal, or POS for the terminal
    │                                side) sent something the protocol forbids
    ├── CryptoError                  a frame or key failed a cryptographic check;
    │                                the SPI decoder reports these as a typed
    │                                ``RejectedFrame`` instead of raising
    ├── CommandError                 a POS backend's command is malformed or not
    │                                allowed (answered with ``command_rejected``)
    ├── ConfigurationError           the service is configured wrongly (missing or
    │                                wrong master key, bad Redis URL); fatal
    └── RetryLater                   a transient condition (Redis or terminal
                                     unreachable); the same action may succeed later

Only ``RetryLater`` is worth retrying unchanged. ``RemoteProtocolError`` and
``CryptoError`` from a terminal are logged, counted and survived: they never
end a lane. ``LocalProtocolError`` and ``CommandError`` are answered to whoever
asked. ``InternalError`` is the only one that may end a process.
"""

from __future__ import annotations

__all__ = [
    "CommandError",
    "ConfigurationError",
    "CryptoError",
    "InternalError",
    "InvalidRequest",
    "LocalProtocolError",
    "MultipairError",
    "ProtocolError",
    "RemoteProtocolError",
    "RetryLater",
]


class MultipairError(Exception):
    """Base class of every error multipair raises on purpose."""


class InternalError(MultipairError):
    """Our own bug: an invariant that should hold did not."""


class ProtocolError(MultipairError):
    """The SPI protocol was broken, by us or by the peer."""


class LocalProtocolError(ProtocolError):
    """The caller asked a session for a move its state does not allow."""


class InvalidRequest(LocalProtocolError, ValueError):
    """A request could not be built from the values given."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class CryptoError(MultipairError):
    """A key, ciphertext or signature failed a cryptographic check."""


class CommandError(MultipairError):
    """A command from a POS backend is malformed or not allowed now."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigurationError(MultipairError):
    """The service is configured wrongly; nothing will work until it is fixed."""


class RetryLater(MultipairError):
    """A transient failure; the same action may succeed if tried again later."""
