"""What both SPI sessions say the same way: the POS session and the simulated terminal.

One definition each of the events and facts the two sides share, so the
POS's :mod:`multipair.spi.pos` and the terminal's :mod:`multipair.spi.terminal`
cannot drift apart (STYLE.md 14). Both modules re-export these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias

from multipair.spi.envelope import RejectReason

__all__ = [
    "PLAIN_AFTER_PAIRING",
    "PRINTERLESS_MODELS",
    "CloseConnection",
    "FrameRejected",
    "RejectCause",
]

PRINTERLESS_MODELS: Final = frozenset({"E355", "CM5"})
"""Terminal models without a printer (§7.1, §13.12): the POS drops receipt options
and print flags for them; the terminal answers ``print`` with ``PRINTER_NOT_AVAILABLE``."""

PLAIN_AFTER_PAIRING: Final = "plain_after_pairing"
"""Why a paired terminal drops a plaintext frame (§2.2): not a :class:`RejectReason`,
because the frame itself was well formed; only the session's keys make it wrong."""

RejectCause: TypeAlias = RejectReason | Literal["plain_after_pairing"]
"""What :attr:`FrameRejected.reason` holds; every value logs as a plain string."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameRejected:
    """An incoming frame was dropped (bad signature, not JSON, …): log and count it.

    ``reason`` is a :class:`RejectReason`, or :data:`PLAIN_AFTER_PAIRING` on the
    terminal side; ``detail`` never holds key material.
    """

    type: ClassVar[str] = "frame_rejected"
    reason: RejectCause
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection:
    """The session wants the connection closed (e.g. the peer stopped answering pings).

    The I/O shell first sends what the session's ``data_to_send()`` holds (a
    final ``drop_keys``, say), then closes, then calls ``connection_lost``.
    """

    type: ClassVar[str] = "close_connection"
    reason: str
