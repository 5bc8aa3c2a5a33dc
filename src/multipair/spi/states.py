"""The POS side's words for where things stand: one enum per concept (STYLE.md §14).

The protocol owns these words (PROTOCOL.md §7.1, §8.1–§8.3). The POS session
(:mod:`multipair.spi.pos`) reports them, the broker contract publishes them
(:mod:`multipair.broker_schema.events` names them ``Status``, ``Flow`` and
``TxResult``) and the transaction record persists :class:`TxPhase` (the store
names it ``TxState``). Their values travel (events, the lane's state hash,
Redis records), so a value never changes; the vocabularies may only grow.

Transaction phases move along one table, :data:`TX_MOVES`::

    requested ──> sent ──> awaiting_signature ──┐
        │          │  ^──────────┘  ^            │
        │          └──> awaiting_auth_code ──────┤
        └───────────────────────────────────────> completed   (final)

Any phase but ``completed`` may go to ``completed``; ``sent`` and the two
``awaiting_*`` phases may go to each other (the terminal asks, the POS
answers, the terminal goes on; §8.3). The session itself only ever enters an
``awaiting_*`` phase from ``sent``; a record may go straight from one
``awaiting_*`` to the other because the lane does not record the ``sent`` in
between.

No I/O and no dependencies: anything may import this module.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["TX_MOVES", "Outcome", "SpiFlow", "SpiStatus", "TxPhase"]


class SpiStatus(StrEnum):
    """A pairing's connection status (PROTOCOL.md §8.1)."""

    UNPAIRED = "unpaired"
    PAIRED_CONNECTING = "paired_connecting"
    PAIRED_CONNECTED = "paired_connected"


class SpiFlow(StrEnum):
    """What the POS side is busy with (PROTOCOL.md §8.2)."""

    IDLE = "idle"
    PAIRING = "pairing"
    TRANSACTION = "transaction"


class Outcome(StrEnum):
    """A transaction's result as the POS can know it (PROTOCOL.md §7.1, ``SuccessState``)."""

    SUCCESS = "success"
    FAILED = "failed"
    UNKNOWN = "unknown"
    """No outcome could be learned: check the terminal before trying again."""


class TxPhase(StrEnum):
    """Where the current transaction stands (PROTOCOL.md §8.3; the table :data:`TX_MOVES`)."""

    REQUESTED = "requested"
    """Recorded; the request has not gone to the terminal (or it is not known that it did)."""
    SENT = "sent"
    AWAITING_SIGNATURE = "awaiting_signature"
    AWAITING_AUTH_CODE = "awaiting_auth_code"
    COMPLETED = "completed"


TX_MOVES: Final[dict[TxPhase, frozenset[TxPhase]]] = {
    TxPhase.REQUESTED: frozenset({TxPhase.SENT, TxPhase.COMPLETED}),
    TxPhase.SENT: frozenset(
        {TxPhase.AWAITING_SIGNATURE, TxPhase.AWAITING_AUTH_CODE, TxPhase.COMPLETED}
    ),
    TxPhase.AWAITING_SIGNATURE: frozenset(
        {TxPhase.SENT, TxPhase.AWAITING_AUTH_CODE, TxPhase.COMPLETED}
    ),
    TxPhase.AWAITING_AUTH_CODE: frozenset(
        {TxPhase.SENT, TxPhase.AWAITING_SIGNATURE, TxPhase.COMPLETED}
    ),
    TxPhase.COMPLETED: frozenset(),
}
"""Allowed moves: phase -> the phases it may go to (the diagram in the module docstring)."""
