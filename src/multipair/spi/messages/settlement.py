"""Settlement: closing the day and asking for its totals (PROTOCOL.md §7.14).

Neither request sends its ``pos_ref_id`` (the POS's own bookkeeping) and
only the merchant copy flag may go out; the answer carries the totals per
card scheme. Fields are declared in wire order; the codec is :mod:`._wire`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from multipair.spi.messages._wire import wire
from multipair.spi.messages.base import FromTerminal, TransactionRequest
from multipair.spi.messages.events import Event, TxType
from multipair.spi.messages.receipts import (
    AS_OPTIONS,
    AS_SETTLE_FLAGS,
    PrintingConfig,
    ReceiptOptions,
)

__all__ = [
    "SchemeTotals",
    "SettleRequest",
    "SettlementEnquiryRequest",
    "SettlementResponse",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleRequest(TransactionRequest):
    """``settle`` (§7.14). ``pos_ref_id`` is the POS's own bookkeeping and is not sent."""

    event: ClassVar[Event] = Event.SETTLE
    id_prefix: ClassVar[str] = "settle"
    tx_type: ClassVar[TxType] = TxType.SETTLE
    response_event: ClassVar[Event] = Event.SETTLE_RESPONSE

    pos_ref_id: str = field(default="", metadata=wire(local=True))
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_SETTLE_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementEnquiryRequest(TransactionRequest):
    """``settlement_enquiry`` (§7.14): totals without closing the day; ``pos_ref_id`` not sent."""

    event: ClassVar[Event] = Event.SETTLEMENT_ENQUIRY
    id_prefix: ClassVar[str] = "stlenq"
    tx_type: ClassVar[TxType] = TxType.SETTLEMENT_ENQUIRY
    response_event: ClassVar[Event] = Event.SETTLEMENT_ENQUIRY_RESPONSE

    pos_ref_id: str = field(default="", metadata=wire(local=True))
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_SETTLE_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemeTotals:
    """One card scheme's line of a settlement (§7.14). Numbers arrive as strings.

    ``settle_by_acquirer`` is ``"Yes"``/``"No"`` on the wire.
    """

    scheme_name: str | None = None
    settle_by_acquirer: bool | None = field(default=None, metadata=wire(yes_no=True))
    total_count: int | None = None
    total_value: int | None = None
    total_purchase_count: int | None = None
    total_purchase_value: int | None = None
    total_refund_count: int | None = None
    total_refund_value: int | None = None
    total_cash_count: int | None = None
    total_cash_value: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementResponse(FromTerminal):
    """``settle_response`` or ``settlement_enquiry_response`` (§7.14); carries no ``pos_ref_id``.

    ``schemes`` keeps the entries that are objects, in order.
    """

    event: str = field(metadata=wire(event=True))
    success: bool | None = None
    host_response_code: str | None = None
    host_response_text: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None
    bank_date: str | None = None
    bank_time: str | None = None
    terminal_id: str | None = None
    merchant_receipt: str | None = field(default=None, repr=False)
    merchant_receipt_printed: bool | None = None
    accumulated_total_count: int | None = None
    accumulated_total_value: int | None = None
    accumulated_settle_by_acquirer_count: int | None = None
    accumulated_settle_by_acquirer_value: int | None = None
    schemes: tuple[SchemeTotals, ...] = ()
