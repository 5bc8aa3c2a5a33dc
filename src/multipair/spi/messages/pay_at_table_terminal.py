"""Pay at table from the terminal's side (PROTOCOL.md §7.23): the requests a terminal starts.

The terminal drives pay at table: it asks for the table config, a bill or
the open tables, reports each payment and the end of a payment flow; the
POS answers with the replies of :mod:`.pay_at_table`. These are the bodies
the terminal sends, declared once in wire order (STYLE.md 15) so the
simulated terminal writes them with the generic codec and a POS may read
them strictly with ``from_data``. Their ids are the terminal's own
(``C1.4`` …, §2.5), chosen by the terminal session, so ``id_prefix`` is
empty and ``reply_event`` names what the POS answers (matched by id, except
the flow-ended ack, which has a new id and is matched by ``bill_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final

from multipair.exceptions import InvalidRequest
from multipair.spi.envelope import JsonObject
from multipair.spi.messages._wire import wire
from multipair.spi.messages.base import Request
from multipair.spi.messages.events import Event

__all__ = [
    "PAYMENT_TYPES",
    "BillPaymentFlowEndedRequest",
    "BillPaymentRequest",
    "GetBillDetailsRequest",
    "GetOpenTablesRequest",
    "GetTableConfigRequest",
    "TerminalPayAtTableRequest",
]

PAYMENT_TYPES: Final = frozenset({"card", "cash"})
"""The ``payment_type`` values of a bill payment (§7.23)."""


class TerminalPayAtTableRequest(Request):
    """Base of the requests a terminal starts (§7.23); ``reply_event`` is the POS's answer."""

    __slots__ = ()

    id_prefix: ClassVar[str] = ""
    reply_event: ClassVar[Event]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTableConfigRequest(TerminalPayAtTableRequest):
    """``get_table_config`` (no data): answered by ``set_table_config`` with the same id.

    §13.14: a 2.9.13 POS that never set pay at table up answers nothing;
    the terminal then treats pay at table as off.
    """

    event: ClassVar[Event] = Event.GET_TABLE_CONFIG
    reply_event: ClassVar[Event] = Event.SET_TABLE_CONFIG
    data_is_null: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class GetBillDetailsRequest(TerminalPayAtTableRequest):
    """``get_bill_details``: the bill of a table, answered by ``bill_details`` (same id).

    ``bill_id`` goes out only when set (the clients read ``table_id`` and
    ``operator_id``; fixture BillStatusRequest.json sends only those).
    """

    event: ClassVar[Event] = Event.GET_BILL_DETAILS
    reply_event: ClassVar[Event] = Event.BILL_DETAILS

    table_id: str
    operator_id: str = ""
    bill_id: str = field(default="", metadata=wire(omit_empty=True))
    payment_flow_started: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentRequest(TerminalPayAtTableRequest):
    """``bill_payment``: one payment of a bill, answered by the updated ``bill_details``.

    ``payment_details`` is a purchase-response-like object (§7.1; fixture
    BillPaymentWithCard.json) whose ``terminal_ref_id`` the POS de-duplicates by.
    """

    event: ClassVar[Event] = Event.BILL_PAYMENT
    reply_event: ClassVar[Event] = Event.BILL_DETAILS

    bill_id: str
    operator_id: str = ""
    payment_type: str
    table_id: str
    payment_details: JsonObject = field(default_factory=dict)

    def _check(self) -> None:
        if self.payment_type not in PAYMENT_TYPES:
            raise InvalidRequest(f"payment_type must be card or cash, got {self.payment_type!r}")

    @property
    def terminal_ref_id(self) -> str | None:
        """The payment's reference, the POS's de-duplication key (§7.23)."""
        value = self.payment_details.get("terminal_ref_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetOpenTablesRequest(TerminalPayAtTableRequest):
    """``get_open_tables``: the tables with an open bill, answered by ``open_tables`` (same id)."""

    event: ClassVar[Event] = Event.GET_OPEN_TABLES
    reply_event: ClassVar[Event] = Event.OPEN_TABLES

    operator_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentFlowEndedRequest(TerminalPayAtTableRequest):
    """``bill_payment_flow_ended``: the totals of one payment flow of a bill.

    JS answers ``bill_payment_flow_ended_ack {bill_id}`` under a *new* id
    (``authad…``) while connected; Java answers nothing (§7.23, §13.14).
    """

    event: ClassVar[Event] = Event.BILL_PAYMENT_FLOW_ENDED
    reply_event: ClassVar[Event] = Event.BILL_PAYMENT_FLOW_ENDED_ACK

    bill_id: str
    bill_outstanding_amount: int
    bill_total_amount: int
    operator_id: str = ""
    table_id: str
    card_total_count: int = 0
    card_total_amount: int = 0
    cash_total_count: int = 0
    cash_total_amount: int = 0
