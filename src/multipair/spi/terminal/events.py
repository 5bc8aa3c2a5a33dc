"""What the terminal session reports to its caller: one frozen dataclass per event.

Each event has a ``type`` (its log name). Events report what already
happened (a frame went out, a state moved); the caller acts on them, e.g. the
simulator plays the customer on :class:`TransactionRequested`. The two events
the POS session reports too, :class:`FrameRejected` and
:class:`CloseConnection`, are defined once in :mod:`multipair.spi.common`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from multipair.spi.common import CloseConnection, FrameRejected
from multipair.spi.envelope import JsonObject, Message
from multipair.spi.terminal.state import TransactionRecord
from multipair.spi.terminal.transactions import ReceivedTransaction

__all__ = [
    "AuthCodeReceived",
    "CancelRequested",
    "CloseConnection",
    "FrameRejected",
    "KeysRolled",
    "MessageIn",
    "MessageOut",
    "Paired",
    "PairingCodeReady",
    "PairingFailed",
    "PairingRequested",
    "PayAtTableAnswered",
    "PosIdMismatch",
    "PosInfoReceived",
    "PrintRequested",
    "SignatureDecided",
    "TableConfigReceived",
    "TerminalEvent",
    "TransactionFinished",
    "TransactionRefused",
    "TransactionRequested",
    "UnexpectedMessage",
    "Unpaired",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingRequested:
    """A POS sent ``pair_request``; ``key_request`` went out."""

    type: ClassVar[str] = "pairing_requested"
    pos_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingCodeReady:
    """Keys derived and ``key_check`` sent: the code both screens show (§3.7)."""

    type: ClassVar[str] = "pairing_code_ready"
    confirmation_code: str
    pos_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Paired:
    """The terminal user confirmed; ``pair_response {success: true}`` went out."""

    type: ClassVar[str] = "paired"
    pos_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingFailed:
    """A pairing in progress ended without keys."""

    type: ClassVar[str] = "pairing_failed"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unpaired:
    """The keys were dropped, by the POS (``drop_keys`` received) or the terminal user."""

    type: ClassVar[str] = "unpaired"
    by: Literal["pos", "terminal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRequested:
    """A transaction started; the caller now decides how it goes."""

    type: ClassVar[str] = "transaction_requested"
    tx: ReceivedTransaction


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRefused:
    """A transaction request was answered at once with a failure (busy, missing or invalid
    arguments); ``request`` is its event name."""

    type: ClassVar[str] = "transaction_refused"
    pos_ref_id: str | None
    request: str
    error_reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested:
    """``cancel_transaction`` arrived; ``accepted`` tells whether it will cancel."""

    type: ClassVar[str] = "cancel_requested"
    pos_ref_id: str | None
    accepted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureDecided:
    """The POS accepted or declined the signature; the caller completes the transaction."""

    type: ClassVar[str] = "signature_decided"
    accepted: bool
    pos_ref_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeReceived:
    """The POS sent the phone authorisation code; the caller completes the transaction."""

    type: ClassVar[str] = "auth_code_received"
    code: str
    pos_ref_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionFinished:
    """The current transaction ended and was recorded (sent or not)."""

    type: ClassVar[str] = "transaction_finished"
    record: TransactionRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysRolled:
    """The terminal switched to the next keys (§5.7)."""

    type: ClassVar[str] = "keys_rolled"
    fingerprint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PosInfoReceived:
    """``set_pos_info`` arrived and was acknowledged (§7.21)."""

    type: ClassVar[str] = "pos_info_received"
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintRequested:
    """``print`` arrived and was acknowledged (§7.20)."""

    type: ClassVar[str] = "print_requested"
    key: str | None
    payload: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PayAtTableAnswered:
    """The POS answered a pay-at-table request this terminal sent (§7.23), matched by id
    (by ``bill_id`` for the flow-ended ack, whose ``message_id`` is new)."""

    type: ClassVar[str] = "pay_at_table_answered"
    request_id: str
    request: str
    reply_event: str
    message_id: str
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class TableConfigReceived:
    """A valid ``set_table_config`` arrived and is now the terminal's table config (§7.23);
    ``answered``: it answered this terminal's ``get_table_config`` (else the POS pushed it)."""

    type: ClassVar[str] = "table_config_received"
    message_id: str
    answered: bool
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class UnexpectedMessage:
    """A well-formed message the terminal ignores in its current state."""

    type: ClassVar[str] = "unexpected_message"
    event: str
    message_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PosIdMismatch:
    """POS ids disagree (URL query, inner and outer ``pos_id``, paired POS): logged, not fatal."""

    type: ClassVar[str] = "pos_id_mismatch"
    expected: str | None
    received: str
    where: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageIn:
    """Trace (only with ``trace=True``): a message was accepted."""

    type: ClassVar[str] = "message_in"
    message: Message
    encrypted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageOut:
    """Trace (only with ``trace=True``): a message was queued for sending."""

    type: ClassVar[str] = "message_out"
    message: Message
    encrypted: bool


TerminalEvent = (
    PairingRequested
    | PairingCodeReady
    | Paired
    | PairingFailed
    | Unpaired
    | TransactionRequested
    | TransactionRefused
    | CancelRequested
    | SignatureDecided
    | AuthCodeReceived
    | TransactionFinished
    | KeysRolled
    | FrameRejected
    | PosInfoReceived
    | PrintRequested
    | PayAtTableAnswered
    | TableConfigReceived
    | CloseConnection
    | UnexpectedMessage
    | PosIdMismatch
    | MessageIn
    | MessageOut
)
