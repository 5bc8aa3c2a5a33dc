"""The terminal's three state machines, each a table (h11 ``_state.py`` style).

Rules: the link (:class:`LinkState`), pairing (:class:`PairingState`) and the
current transaction (:class:`TxState`) move only along the edges of their
table; :func:`move` raises :class:`~multipair.exceptions.LocalProtocolError`
for any other move, which is the caller's bug (PROTOCOL.md §4, §7.1, §7.6).
"""

from __future__ import annotations

from enum import Enum
from typing import Final, TypeVar

from multipair.exceptions import LocalProtocolError

__all__ = [
    "CANCELLABLE",
    "LINK_TRANSITIONS",
    "PAIRING_TRANSITIONS",
    "TX_TRANSITIONS",
    "LinkState",
    "PairingState",
    "TxState",
    "move",
]


class LinkState(Enum):
    """Is a POS connected right now."""

    DISCONNECTED = "disconnected"
    CONNECTED = "connected"


class PairingState(Enum):
    """Pairing, from the terminal's point of view (§4)."""

    UNPAIRED = "unpaired"
    AWAITING_KEY_RESPONSE = "awaiting_key_response"  # key_request sent
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # key_check sent, code on screen
    PAIRED = "paired"


class TxState(Enum):
    """The one operation a terminal runs at a time (§7.1)."""

    IDLE = "idle"
    CARD_PENDING = "card_pending"  # before the point of no return: cancellable
    PROCESSING = "processing"  # past the point of no return
    AWAITING_SIGNATURE = "awaiting_signature"
    AWAITING_AUTH_CODE = "awaiting_auth_code"  # cancellable: the user can only cancel (§7.10 R3)


LINK_TRANSITIONS: Final[dict[LinkState, frozenset[LinkState]]] = {
    LinkState.DISCONNECTED: frozenset({LinkState.CONNECTED}),
    LinkState.CONNECTED: frozenset({LinkState.DISCONNECTED}),
}

PAIRING_TRANSITIONS: Final[dict[PairingState, frozenset[PairingState]]] = {
    PairingState.UNPAIRED: frozenset({PairingState.AWAITING_KEY_RESPONSE}),
    PairingState.AWAITING_KEY_RESPONSE: frozenset(
        {
            PairingState.AWAITING_KEY_RESPONSE,  # a fresh pair_request restarts
            PairingState.AWAITING_CONFIRMATION,
            PairingState.UNPAIRED,
        }
    ),
    PairingState.AWAITING_CONFIRMATION: frozenset(
        {PairingState.PAIRED, PairingState.UNPAIRED, PairingState.AWAITING_KEY_RESPONSE}
    ),
    PairingState.PAIRED: frozenset({PairingState.UNPAIRED, PairingState.AWAITING_KEY_RESPONSE}),
}

TX_TRANSITIONS: Final[dict[TxState, frozenset[TxState]]] = {
    TxState.IDLE: frozenset({TxState.CARD_PENDING}),
    TxState.CARD_PENDING: frozenset(
        {TxState.PROCESSING, TxState.AWAITING_SIGNATURE, TxState.AWAITING_AUTH_CODE, TxState.IDLE}
    ),
    TxState.PROCESSING: frozenset(
        {TxState.AWAITING_SIGNATURE, TxState.AWAITING_AUTH_CODE, TxState.IDLE}
    ),
    TxState.AWAITING_SIGNATURE: frozenset({TxState.PROCESSING, TxState.IDLE}),
    TxState.AWAITING_AUTH_CODE: frozenset({TxState.PROCESSING, TxState.IDLE}),
}

CANCELLABLE: Final = frozenset({TxState.CARD_PENDING, TxState.AWAITING_AUTH_CODE})
"""Where a ``cancel_transaction`` still succeeds (before the point of no return, §7.6)."""


_S = TypeVar("_S", LinkState, PairingState, TxState)


def move(table: dict[_S, frozenset[_S]], current: _S, new: _S, what: str) -> _S:
    """``new`` if ``table`` allows ``current -> new``; else LocalProtocolError naming ``what``."""
    if new not in table[current]:
        raise LocalProtocolError(f"{what}: cannot go from {current.value} to {new.value}")
    return new
