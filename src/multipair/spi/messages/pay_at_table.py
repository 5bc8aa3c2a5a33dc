"""Pay at table (PROTOCOL.md §7.23): the terminal asks, the POS answers.

The terminal's requests (``get_table_config``, ``get_bill_details``,
``bill_payment``, ...) arrive as :class:`PayAtTableMessage`, read by the
pay-at-table layer; the POS answers with the replies declared here, whose
shape depends on a field: a disabled table config sends only its switch,
a failed bill sends its error instead of its totals. Fields are declared
in wire order; the codec is :mod:`._wire`'s. The terminal's requests
(:mod:`.pay_at_table_terminal`) are read strictly by
:func:`read_pay_at_table_request`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final

from multipair.exceptions import RemoteProtocolError
from multipair.spi.envelope import JsonObject
from multipair.spi.messages._wire import REQUIRED, Checked, decode, encode, wire
from multipair.spi.messages.base import FromTerminal, Request
from multipair.spi.messages.events import Event
from multipair.spi.messages.pay_at_table_terminal import (
    BillPaymentFlowEndedRequest,
    BillPaymentRequest,
    GetBillDetailsRequest,
    GetOpenTablesRequest,
)

__all__ = [
    "PAYMENT_SUMMARY_KEYS",
    "BillDetailsReply",
    "BillPaymentDetails",
    "BillPaymentFlowEndedAck",
    "OpenTable",
    "OpenTablesReply",
    "PayAtTableMessage",
    "PayAtTableRequestMessage",
    "PaymentHistoryEntry",
    "ReadPayAtTableRequest",
    "SetTableConfigRequest",
    "read_pay_at_table_request",
]

# Everything but the switch exists only when pay at table is on.
_IF_ENABLED = wire(only_if=("pay_at_table_enabled", True))


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTableConfigRequest(Request):
    """``set_table_config`` (§7.23): pushed (``patconf`` id) or the reply to ``get_table_config``.

    With pay at table off the data is only ``{"pay_at_table_enabled": false}``,
    and reading such data ignores every other key.
    """

    event: ClassVar[Event] = Event.SET_TABLE_CONFIG
    id_prefix: ClassVar[str] = "patconf"

    pay_at_table_enabled: bool = field(default=False, metadata=wire(read_default=REQUIRED))
    operator_id_enabled: bool = field(default=False, metadata=_IF_ENABLED)
    split_by_amount_enabled: bool = field(default=False, metadata=_IF_ENABLED)
    equal_split_enabled: bool = field(default=False, metadata=_IF_ENABLED)
    tipping_enabled: bool = field(default=False, metadata=_IF_ENABLED)
    summary_report_enabled: bool = field(default=False, metadata=_IF_ENABLED)
    pay_button_label: str = field(default="", metadata=_IF_ENABLED)
    operator_id_label: str = field(default="", metadata=_IF_ENABLED)
    table_id_label: str = field(default="", metadata=_IF_ENABLED)
    operator_id_list: tuple[str, ...] = field(default=(), metadata=_IF_ENABLED)
    table_retrieval_enabled: bool = field(default=False, metadata=_IF_ENABLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentHistoryEntry:
    """One payment of a bill (§7.23): ``card`` or ``cash`` and its payment summary (§7.1)."""

    payment_type: str
    payment_summary: JsonObject

    def to_data(self) -> JsonObject:
        """The entry as it appears in ``bill_payment_history``."""
        return encode(self)


_IF_SUCCESS = wire(sent_if=("success", True))


@dataclass(frozen=True, slots=True, kw_only=True)
class BillDetailsReply(Request):
    """``bill_details`` (§7.23), always the reply to ``get_bill_details`` or ``bill_payment``.

    ``bill_id`` and ``table_id`` go out only when set. On success the totals
    and history go out; on failure ``error_reason`` (``INVALID_TABLE_ID``,
    ...) is sent as both reason and detail, as the clients do, and no totals.
    """

    event: ClassVar[Event] = Event.BILL_DETAILS
    id_prefix: ClassVar[str] = ""

    success: bool
    bill_id: str = field(default="", metadata=wire(omit_empty=True))
    table_id: str = field(default="", metadata=wire(omit_empty=True))
    bill_total_amount: int = field(default=0, metadata=_IF_SUCCESS)
    bill_outstanding_amount: int = field(default=0, metadata=_IF_SUCCESS)
    bill_payment_history: tuple[PaymentHistoryEntry, ...] = field(default=(), metadata=_IF_SUCCESS)
    error_reason: str = field(
        default="", metadata=wire(only_if=("success", False), mirror=("error_detail",))
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTable(Checked):
    """One entry of ``open_tables`` (§7.23, §13.13); read back, only ``table_id`` is required."""

    table_id: str
    label: str = field(metadata=wire(read_default=""))
    bill_outstanding_amount: int = field(metadata=wire(read_default=0))


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTablesReply(Request):
    """``open_tables`` (§7.23), always the reply to ``get_open_tables``."""

    event: ClassVar[Event] = Event.OPEN_TABLES
    id_prefix: ClassVar[str] = ""

    tables: tuple[OpenTable, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentFlowEndedAck(Request):
    """``bill_payment_flow_ended_ack`` (§7.23): a new id with the ``authad`` prefix, as JS does."""

    event: ClassVar[Event] = Event.BILL_PAYMENT_FLOW_ENDED_ACK
    id_prefix: ClassVar[str] = "authad"

    bill_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PayAtTableMessage(FromTerminal):
    """A pay-at-table request from the terminal (§7.23); its ``data`` is read by that layer."""

    event: str = field(metadata=wire(event=True))


# --- the terminal's requests, read by the POS (strictly) -------------------------------------

PayAtTableRequestMessage = (
    GetBillDetailsRequest | GetOpenTablesRequest | BillPaymentRequest | BillPaymentFlowEndedRequest
)
"""The pay-at-table requests a POS answers (``get_table_config`` is the session's own)."""

_REQUEST_CLASSES: Final[dict[str, type[PayAtTableRequestMessage]]] = {
    str(Event.GET_BILL_DETAILS): GetBillDetailsRequest,
    str(Event.GET_OPEN_TABLES): GetOpenTablesRequest,
    str(Event.BILL_PAYMENT): BillPaymentRequest,
    str(Event.BILL_PAYMENT_FLOW_ENDED): BillPaymentFlowEndedRequest,
}

PAYMENT_SUMMARY_KEYS: Final = (
    "account_type",
    "auth_code",
    "bank_date",
    "bank_time",
    "host_response_code",
    "host_response_text",
    "masked_pan",
    "purchase_amount",
    "rrn",
    "scheme_name",
    "terminal_id",
    "terminal_ref_id",
    "tip_amount",
    "surcharge_amount",
)
"""The keys of a payment's ``payment_details`` kept in its ``payment_summary`` (§7.1, §7.23)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentDetails(Checked):
    """The amounts and reference of a ``bill_payment``'s ``payment_details`` (§7.23)."""

    purchase_amount: int
    tip_amount: int = 0
    surcharge_amount: int = 0
    terminal_ref_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadPayAtTableRequest:
    """A terminal's pay-at-table request as the POS read it; ``details`` for a ``bill_payment``.

    Not a wire message (its ``request`` is one of four), so the package does not
    re-export it: :func:`multipair.spi.messages.warm` derives a codec for every
    dataclass the package exports.
    """

    request: PayAtTableRequestMessage
    details: BillPaymentDetails | None = None
    payment_summary: JsonObject = field(default_factory=dict)
    """The §7.1 subset of ``payment_details`` a bill's history keeps (``bill_payment`` only)."""


def read_pay_at_table_request(message: PayAtTableMessage) -> ReadPayAtTableRequest:
    """Read ``get_bill_details``, ``get_open_tables``, ``bill_payment`` or
    ``bill_payment_flow_ended`` strictly: ``RemoteProtocolError`` names what is wrong.

    Numbers may come as decimal strings and flags as ``"true"``; a missing
    required key, a negative amount or a ``payment_type`` other than
    ``card``/``cash`` is an error, as is a ``bill_payment`` whose
    ``payment_details`` lack ``purchase_amount``.
    """
    cls = _REQUEST_CLASSES.get(message.event)
    if cls is None:
        raise RemoteProtocolError(f"{message.event} is not a pay-at-table request a POS answers")
    request = cls.from_data(message.data)
    if not isinstance(request, BillPaymentRequest):
        return ReadPayAtTableRequest(request=request)
    raw = request.payment_details
    details = decode(BillPaymentDetails, f"{message.event}.payment_details", raw)
    summary = {key: raw[key] for key in PAYMENT_SUMMARY_KEYS if raw.get(key) is not None}
    return ReadPayAtTableRequest(request=request, details=details, payment_summary=summary)
