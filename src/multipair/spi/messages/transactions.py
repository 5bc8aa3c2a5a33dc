"""Card transactions and their flow (PROTOCOL.md §7.2-7.11, §7.15, §7.17).

The requests a POS sends to run, steer and look up a purchase, refund,
cashout, MOTO, reversal or zip transaction, and the terminal messages that
answer them. Fields are declared in wire order (the order spi-client-js
2.8.3 sends them, vectors/request_messages.json; the zip requests follow
2.9, §13.13); the codec is :mod:`._wire`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from multipair.exceptions import InvalidRequest
from multipair.spi.messages._wire import wire
from multipair.spi.messages.base import FromTerminal, Request, TransactionRequest
from multipair.spi.messages.events import Event, TxType
from multipair.spi.messages.receipts import (
    AS_ALL_FLAGS,
    AS_OPTIONS,
    AS_OPTIONS_V29,
    AS_ZIP_FLAGS,
    PrintingConfig,
    ReceiptOptions,
)

__all__ = [
    "AuthCodeAdviceRequest",
    "AuthCodeRequired",
    "CancelResponse",
    "CancelTransactionRequest",
    "CashoutRequest",
    "GetLastTransactionRequest",
    "GetTransactionRequest",
    "GetTransactionResponse",
    "MotoPurchaseRequest",
    "PurchaseRequest",
    "RefundRequest",
    "ReversalRequest",
    "SignatureAcceptRequest",
    "SignatureDeclineRequest",
    "SignatureRequired",
    "TransactionResponse",
    "TxnUpdate",
    "ZipData",
    "ZipPurchaseRequest",
    "ZipRefundRequest",
]

# ---------------------------------------------------------------------------
# POS -> terminal
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PurchaseRequest(TransactionRequest):
    """``purchase`` (§7.2): a card payment, optionally with tip, cashout and surcharge."""

    event: ClassVar[Event] = Event.PURCHASE
    id_prefix: ClassVar[str] = "prchs"
    tx_type: ClassVar[TxType] = TxType.PURCHASE
    response_event: ClassVar[Event] = Event.PURCHASE_RESPONSE

    pos_ref_id: str
    purchase_amount: int
    tip_amount: int = 0
    cash_amount: int = 0
    prompt_for_cashout: bool = False
    surcharge_amount: int = 0
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)

    def _check(self) -> None:
        # Tip and cashout exclude each other (§7.2), as the clients refuse it.
        if self.tip_amount > 0 and (self.cash_amount > 0 or self.prompt_for_cashout):
            raise InvalidRequest("Cannot Accept Tips and Cashout at the same time.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRequest(TransactionRequest):
    """``refund`` (§7.3). The amount comes first in the data, as JS sends it."""

    event: ClassVar[Event] = Event.REFUND
    id_prefix: ClassVar[str] = "refund"
    tx_type: ClassVar[TxType] = TxType.REFUND
    response_event: ClassVar[Event] = Event.REFUND_RESPONSE

    refund_amount: int
    pos_ref_id: str
    suppress_merchant_password: bool = False
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class CashoutRequest(TransactionRequest):
    """``cash`` (§7.4): cash out only. ``surcharge_amount=None`` is sent as ``null``, as JS does.

    Read back, an explicit ``null`` means "never set" (JS, §7.4); a missing
    key takes the default.
    """

    event: ClassVar[Event] = Event.CASH
    id_prefix: ClassVar[str] = "cshout"
    tx_type: ClassVar[TxType] = TxType.CASHOUT
    response_event: ClassVar[Event] = Event.CASH_RESPONSE

    pos_ref_id: str
    cash_amount: int
    surcharge_amount: int | None = 0
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class MotoPurchaseRequest(TransactionRequest):
    """``moto_purchase`` (§7.5): mail or telephone order, card keyed on the terminal."""

    event: ClassVar[Event] = Event.MOTO_PURCHASE
    id_prefix: ClassVar[str] = "moto"
    tx_type: ClassVar[TxType] = TxType.MOTO
    response_event: ClassVar[Event] = Event.MOTO_PURCHASE_RESPONSE

    pos_ref_id: str
    purchase_amount: int
    surcharge_amount: int = 0
    suppress_merchant_password: bool = False
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTransactionRequest(TransactionRequest):
    """``get_transaction`` (§7.10): the outcome of a recent transaction, by ``pos_ref_id``."""

    event: ClassVar[Event] = Event.GET_TRANSACTION
    id_prefix: ClassVar[str] = "gt"
    tx_type: ClassVar[TxType] = TxType.GET_TRANSACTION
    response_event: ClassVar[Event] = Event.GET_TRANSACTION_RESPONSE

    pos_ref_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetLastTransactionRequest(TransactionRequest):
    """``get_last_transaction`` (§7.11): data ``null``; ``pos_ref_id`` is local bookkeeping."""

    event: ClassVar[Event] = Event.GET_LAST_TRANSACTION
    id_prefix: ClassVar[str] = "glt"
    tx_type: ClassVar[TxType] = TxType.GET_LAST_TRANSACTION
    response_event: ClassVar[Event] = Event.LAST_TRANSACTION
    data_is_null: ClassVar[bool] = True

    pos_ref_id: str = field(default="", metadata=wire(local=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReversalRequest(TransactionRequest):
    """``reverse_transaction`` (§7.15): reverse the transaction with this ``pos_ref_id``."""

    event: ClassVar[Event] = Event.REVERSE_TRANSACTION
    id_prefix: ClassVar[str] = "rev"
    tx_type: ClassVar[TxType] = TxType.REVERSAL
    response_event: ClassVar[Event] = Event.REVERSE_TRANSACTION_RESPONSE

    pos_ref_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipPurchaseRequest(TransactionRequest):
    """``purchase_zip`` (§7.17): a buy-now-pay-later purchase.

    Keys follow 2.9 (§13.13): options right after ``basket``, merchant ones
    first, then the flags. vectors/request_messages.json holds the 2.8.3
    order (flags, then customer, then merchant options); same keys and values.
    """

    event: ClassVar[Event] = Event.PURCHASE_ZIP
    id_prefix: ClassVar[str] = "zprchs"
    tx_type: ClassVar[TxType] = TxType.ZIP_PURCHASE
    response_event: ClassVar[Event] = Event.PURCHASE_ZIP_RESPONSE

    pos_ref_id: str
    purchase_amount: int
    store_code: str = field(metadata=wire(path=("zip_data", "store_code")))
    description: str = field(default="", metadata=wire(path=("basket", "description")))
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS_V29)
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ZIP_FLAGS)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipRefundRequest(TransactionRequest):
    """``refund_zip`` (§7.17): refund a zip purchase; keys in the 2.9 order (§13.13)."""

    event: ClassVar[Event] = Event.REFUND_ZIP
    id_prefix: ClassVar[str] = "zrefund"
    tx_type: ClassVar[TxType] = TxType.ZIP_REFUND
    response_event: ClassVar[Event] = Event.REFUND_ZIP_RESPONSE

    pos_ref_id: str
    refund_amount: int
    original_receipt_number: str = field(
        metadata=wire(path=("zip_data", "original_receipt_number"))
    )
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS_V29)
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ZIP_FLAGS)


# -- steering a transaction in flight -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTransactionRequest(Request):
    """``cancel_transaction`` (§7.6); data ``null``."""

    event: ClassVar[Event] = Event.CANCEL_TRANSACTION
    id_prefix: ClassVar[str] = "ctx"
    data_is_null: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureAcceptRequest(Request):
    """``signature_accept`` (§7.7).

    Java sends no data (and the signature_required id); the terminal side
    reads that as ``pos_ref_id=""`` rather than refusing it.
    """

    event: ClassVar[Event] = Event.SIGNATURE_ACCEPT
    id_prefix: ClassVar[str] = "sigacc"

    pos_ref_id: str = field(metadata=wire(read_default=""))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureDeclineRequest(Request):
    """``signature_decline`` (§7.7); like :class:`SignatureAcceptRequest`."""

    event: ClassVar[Event] = Event.SIGNATURE_DECLINE
    id_prefix: ClassVar[str] = "sigdec"

    pos_ref_id: str = field(metadata=wire(read_default=""))


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeAdviceRequest(Request):
    """``authorisation_code_advice`` (§7.8): the code has exactly 6 characters, digits or not."""

    event: ClassVar[Event] = Event.AUTHORISATION_CODE_ADVICE
    id_prefix: ClassVar[str] = "authad"

    pos_ref_id: str
    # The client checks length only; the vector's code is "AB1234" (§7.8).
    auth_code: str = field(metadata=wire(length=(6, "Not a 6-digit code.")))


# ---------------------------------------------------------------------------
# Terminal -> POS
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipData:
    """``zip_data`` of a ``purchase_zip_response`` / ``refund_zip_response`` (§7.17)."""

    location_id: str | None = None
    receipt_number: str | None = None
    """Zip's receipt number; a ``refund_zip`` names it as ``original_receipt_number``."""
    store_code: str | None = None
    """Purchase only: the store code the request named."""
    original_receipt_number: str | None = None
    """Refund only: the receipt number of the purchase refunded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionResponse(FromTerminal):
    """A purchase-like transaction response (§7.1 "Response fields").

    Used for every transaction ``*_response``, for ``last_transaction`` (flat
    fields) and for the ``tx`` nested in a ``get_transaction_response``
    (whose ``event`` it then carries). ``success`` is ``None`` when missing:
    the outcome is Unknown (§7.1).
    """

    event: str = field(metadata=wire(event=True))
    success: bool | None = None
    pos_ref_id: str | None = None
    transaction_type: str | None = None
    host_response_code: str | None = None
    host_response_text: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None
    rrn: str | None = None
    stan: str | None = None
    auth_code: str | None = None
    scheme_name: str | None = None
    masked_pan: str | None = None
    card_entry: str | None = None
    account_type: str | None = None
    terminal_id: str | None = None
    terminal_ref_id: str | None = None
    merchant_id: str | None = None
    bank_date: str | None = None
    bank_time: str | None = None
    preauth_id: str | None = None
    purchase_amount: int | None = None
    tip_amount: int | None = None
    surcharge_amount: int | None = None
    cash_amount: int | None = None
    refund_amount: int | None = None
    bank_noncash_amount: int | None = None
    bank_cash_amount: int | None = None
    preauth_amount: int | None = None
    topup_amount: int | None = None
    preauth_cancel_amount: int | None = None
    completion_amount: int | None = None
    balance_amount: int | None = None
    existing_preauth_amount: int | None = None
    zip_data: ZipData | None = None
    """Zip transactions only (§7.17)."""
    customer_receipt: str | None = field(default=None, repr=False)
    merchant_receipt: str | None = field(default=None, repr=False)
    customer_receipt_printed: bool | None = None
    merchant_receipt_printed: bool | None = None

    @property
    def retrieved(self) -> bool:
        """Whether the terminal found a transaction: ``host_response_code`` is non-empty (§7.11)."""
        return bool(self.host_response_code)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTransactionResponse(FromTerminal):
    """``get_transaction_response`` (§7.10): ``success`` says whether the lookup worked.

    ``tx`` is the original response, nested; ``None`` when absent or not an
    object (R10: keep waiting). Apply the §7.10 table to ``error_reason``.
    """

    success: bool | None = None
    pos_ref_id: str | None = None
    tx: TransactionResponse | None = None
    error_reason: str | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResponse(FromTerminal):
    """``cancel_response`` (§7.6): success only means the attempt was accepted."""

    success: bool | None = None
    pos_ref_id: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureRequired(FromTerminal):
    """``signature_required`` (§7.7): print ``merchant_receipt``, have it signed, then answer."""

    pos_ref_id: str | None = None
    merchant_receipt: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeRequired(FromTerminal):
    """``authorisation_code_required`` (§7.8): call the phone number, quote the merchant id."""

    pos_ref_id: str | None = None
    auth_centre_phone_number: str | None = None
    merchant_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnUpdate(FromTerminal):
    """``txn_update_message`` (§7.9): what the terminal screen says; informational."""

    display_message_code: int | None = None
    display_message_text: str = ""
