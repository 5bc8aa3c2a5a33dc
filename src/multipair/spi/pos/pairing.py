"""The pairing machine (PROTOCOL.md §4.2–§4.5): its steps and the one table they move along.

A pairing waits for a connection, sends ``pair_request``, answers the
terminal's ``key_request``, derives the confirmation code from its
``key_check``, then waits for both the POS operator and the terminal to
confirm. A lost connection before the end sends it back to waiting for a
connection (the session counts the retries). Any other move raises
:class:`~multipair.exceptions.LocalProtocolError`. The session
(:mod:`multipair.spi.pos.link`) drives it and does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from multipair.exceptions import LocalProtocolError

__all__ = ["Pairing", "PairingStep"]


class PairingStep(StrEnum):
    """Where a pairing stands (§4.2–§4.5)."""

    WAITING_FOR_CONNECTION = "waiting_for_connection"
    WAITING_FOR_KEY_REQUEST = "waiting_for_key_request"
    WAITING_FOR_KEY_CHECK = "waiting_for_key_check"
    CONFIRMING = "confirming"
    FINISHED = "finished"


# Allowed pairing moves: (from step, trigger) -> to step.
_PAIRING_MOVES: Final[dict[tuple[PairingStep, str], PairingStep]] = {
    (PairingStep.WAITING_FOR_CONNECTION, "connected"): PairingStep.WAITING_FOR_KEY_REQUEST,
    (PairingStep.WAITING_FOR_KEY_REQUEST, "key_request"): PairingStep.WAITING_FOR_KEY_CHECK,
    (PairingStep.WAITING_FOR_KEY_REQUEST, "connection_lost"): PairingStep.WAITING_FOR_CONNECTION,
    (PairingStep.WAITING_FOR_KEY_CHECK, "key_check"): PairingStep.CONFIRMING,
    (PairingStep.WAITING_FOR_KEY_CHECK, "connection_lost"): PairingStep.WAITING_FOR_CONNECTION,
    (PairingStep.CONFIRMING, "connection_lost"): PairingStep.WAITING_FOR_CONNECTION,
    (PairingStep.CONFIRMING, "both_confirmed"): PairingStep.FINISHED,
}


@dataclass(slots=True)
class Pairing:
    """A pairing in progress: its step, request id, code and who still has to confirm."""

    step: PairingStep = PairingStep.WAITING_FOR_CONNECTION
    request_id: str = ""
    code: str | None = None
    awaiting_pos: bool = False
    awaiting_terminal: bool = False
    retries: int = 0

    def move(self, trigger: str) -> None:
        target = _PAIRING_MOVES.get((self.step, trigger))
        if target is None:
            raise LocalProtocolError(f"pairing cannot take {trigger!r} at step {self.step}")
        self.step = target
