"""What the POS session hands its caller: events, and the POS details it is given.

Each event is a frozen, slotted, keyword-only dataclass (STYLE.md §3); the
caller drains them with :meth:`~multipair.spi.pos.PosSession.events_received`
and handles them (persist, publish) before sending what the session queued.
:data:`PosSessionEvent` is the union of them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from multipair.spi import messages as m
from multipair.spi.common import CloseConnection, FrameRejected
from multipair.spi.crypto import Secrets
from multipair.spi.messages.pay_at_table import ReadPayAtTableRequest
from multipair.spi.pos.pairing import PairingStep
from multipair.spi.states import Outcome, SpiFlow, SpiStatus

__all__ = [
    "AuthCodeRequired",
    "BillPaymentRefused",
    "CancelFailed",
    "CloseConnection",
    "FrameRejected",
    "IgnoredMessage",
    "LastTransactionResult",
    "PairingFinished",
    "PairingProgress",
    "PayAtTableRequest",
    "PosInfo",
    "PosSessionEvent",
    "PosSpiTokenReceived",
    "SecretsChanged",
    "SignatureRequired",
    "StatusChanged",
    "TerminalAnswer",
    "TerminalErrorReceived",
    "TransactionCompleted",
    "TransactionLookupResult",
    "TransactionRequestSent",
    "TransactionUpdate",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged:
    """Status or flow moved (§8.1, §8.2)."""

    status: SpiStatus
    flow: SpiFlow


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingProgress:
    """Pairing moved on; ``confirmation_code`` is set once both sides derived keys."""

    step: PairingStep
    message: str
    confirmation_code: str | None = None
    awaiting_pos_confirmation: bool = False
    awaiting_terminal_confirmation: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingFinished:
    """Pairing ended (§4.4): on success the keys arrive in :class:`SecretsChanged` first."""

    success: bool
    message: str
    cancelled: bool = False
    """True when the POS side cancelled it (:meth:`PosSession.pair_cancel`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretsChanged:
    """The keys changed: persist them. ``None`` means forget them (unpaired).

    For ``reason == "rolled"`` the reply that uses the new keys is held back
    until :meth:`PosSession.secrets_persisted` is called (§5.7).
    """

    secrets: Secrets | None
    reason: str
    previous: Secrets | None = None
    """Keys to keep beside ``secrets`` until the terminal confirms a roll (§13.6)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRequestSent:
    """The transaction's request was handed to :meth:`PosSession.data_to_send`."""

    pos_ref_id: str
    tx_type: m.TxType
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionUpdate:
    """Progress text from the terminal's screen (§7.9)."""

    pos_ref_id: str
    display_message_text: str
    display_message_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureRequired:
    """The terminal waits for signature accept/decline (§7.7).

    ``placeholder`` is true when it was learned from a ``get_transaction``
    answer and the real receipt is not available (§7.10 R1).
    """

    pos_ref_id: str
    merchant_receipt: str
    placeholder: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeRequired:
    """The terminal waits for a phone authorisation code (§7.8)."""

    pos_ref_id: str
    auth_centre_phone_number: str
    merchant_id: str
    placeholder: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelFailed:
    """The terminal refused to cancel (§7.6); the transaction goes on."""

    pos_ref_id: str
    error_reason: str
    error_detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionCompleted:
    """The transaction ended. ``recovered`` when learned after a disconnect or restart."""

    pos_ref_id: str
    tx_type: m.TxType
    outcome: Outcome
    message: str
    recovered: bool = False
    response: m.TransactionResponse | m.SettlementResponse | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionLookupResult:
    """Answer to a caller's :meth:`PosSession.lookup_transaction`."""

    pos_ref_id: str
    response: m.GetTransactionResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class LastTransactionResult:
    """Answer to a caller's :meth:`PosSession.lookup_last_transaction` (§7.11)."""

    response: m.TransactionResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalAnswer:
    """A terminal reply with no effect on the flows: status, configuration, battery, print,
    POS info (§7.18–§7.21)."""

    answer: (
        m.TerminalStatus
        | m.TerminalConfiguration
        | m.BatteryLevelChanged
        | m.PrintResponse
        | m.SetPosInfoResponse
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PosSpiTokenReceived:
    """``provision_pos_spi_token`` (§13.10). A secret: keep it out of logs and events."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalErrorReceived:
    """An ``error`` message from the terminal (§9)."""

    error_reason: str
    error_detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PayAtTableRequest:
    """The terminal asks the POS about pay at table (§7.23): a bill, the open tables, a
    payment, the end of a payment flow.

    Answer ``get_bill_details`` and ``bill_payment`` with
    :meth:`PosSession.reply_bill_details`, ``get_open_tables`` with
    :meth:`PosSession.reply_open_tables` (both under ``message_id``), and
    acknowledge ``bill_payment_flow_ended`` with
    :meth:`PosSession.ack_bill_flow_ended` once it is handled (§13.14).
    """

    message_id: str
    """The terminal's id of the request: the reply's id."""
    read: ReadPayAtTableRequest
    """The request, read strictly (``read.request``), with a payment's details."""

    @property
    def event(self) -> str:
        """The request's event, e.g. ``get_bill_details``."""
        return str(self.read.request.event)


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentRefused:
    """A ``bill_payment`` the session told the terminal no to (§7.23): pay at table is off,
    or the payment could not be read. The card may have been charged, so someone must
    book or reverse it: ``payment`` names it (bill, table, type, terminal_ref_id, amount;
    never card data)."""

    why: str
    payment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoredMessage:
    """A well-formed message that does not fit the current state; it was ignored."""

    event: str
    reason: str


PosSessionEvent = (
    StatusChanged
    | PairingProgress
    | PairingFinished
    | SecretsChanged
    | TransactionRequestSent
    | TransactionUpdate
    | SignatureRequired
    | AuthCodeRequired
    | CancelFailed
    | TransactionCompleted
    | TransactionLookupResult
    | LastTransactionResult
    | TerminalAnswer
    | PosSpiTokenReceived
    | TerminalErrorReceived
    | PayAtTableRequest
    | BillPaymentRefused
    | FrameRejected
    | IgnoredMessage
    | CloseConnection
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PosInfo:
    """What ``set_pos_info`` tells the terminal (§7.21)."""

    pos_vendor_id: str
    pos_version: str
    library_version: str
    library_language: str = "python"
    device_system: str = ""
    spice_version: str | None = None
