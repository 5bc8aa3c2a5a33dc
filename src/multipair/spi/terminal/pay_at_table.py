"""Pay at table as the terminal plays it (PROTOCOL.md §7.23, §13.14): its requests and the replies.

Rules:

- The terminal starts every pay-at-table exchange: ``get_table_config``,
  ``get_bill_details``, ``get_open_tables``, ``bill_payment``,
  ``bill_payment_flow_ended``, each under the terminal's own message id.
  Each is *pending* until its reply arrives or the caller abandons it.
- A reply is matched before it is used (STYLE.md 16): ``bill_details``,
  ``open_tables`` and an answering ``set_table_config`` must carry the id
  of a pending request that expects that event; the flow-ended ack comes
  under a new id (JS ``authad…``) and is matched by the ``bill_id`` of a
  pending ``bill_payment_flow_ended``. One reply per request: a second one
  (the JS "missing return", §11) finds nothing pending.
- A reply the catalogue cannot read leaves the request pending: the POS
  sent nothing usable, so the caller's wait ends by its own timeout.
- ``set_table_config`` under any other id is the POS's push (``patconf…``);
  either way the last valid config is kept (:attr:`PayAtTable.table_config`).

No I/O, no clock: the caller says when it stops waiting (:meth:`abandon`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from multipair.exceptions import RemoteProtocolError
from multipair.spi import messages as m
from multipair.spi.envelope import JsonObject, Message

__all__ = ["PAT_REPLY_EVENTS", "Matched", "PayAtTable", "PendingPatRequest", "Unmatched"]

PAT_REPLY_EVENTS: Final = frozenset(
    {
        str(m.Event.SET_TABLE_CONFIG),
        str(m.Event.BILL_DETAILS),
        str(m.Event.OPEN_TABLES),
        str(m.Event.BILL_PAYMENT_FLOW_ENDED_ACK),
    }
)
"""What a POS sends in answer to the terminal's pay-at-table requests (§7.23)."""

_READERS: Final[dict[str, type[m.Request]]] = {
    str(m.Event.SET_TABLE_CONFIG): m.SetTableConfigRequest,
    str(m.Event.BILL_DETAILS): m.BillDetailsReply,
    str(m.Event.OPEN_TABLES): m.OpenTablesReply,
    str(m.Event.BILL_PAYMENT_FLOW_ENDED_ACK): m.BillPaymentFlowEndedAck,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingPatRequest:
    """A pay-at-table request the terminal sent and still waits to see answered."""

    message_id: str
    request: m.TerminalPayAtTableRequest
    sent_at: float

    @property
    def event(self) -> str:
        """The request's event name, e.g. ``get_bill_details``."""
        return str(self.request.event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Matched:
    """A POS message that answers a pending request (None for a pushed table config)."""

    pending: PendingPatRequest | None
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Unmatched:
    """A POS message that answers nothing pending, or cannot be read: ignored."""

    reason: str


class PayAtTable:
    """The terminal's pay-at-table memory: pending requests by id and the last table config."""

    __slots__ = ("_pending", "table_config")

    def __init__(self) -> None:
        self._pending: dict[str, PendingPatRequest] = {}
        self.table_config: JsonObject | None = None
        """The data of the last valid ``set_table_config`` (pushed or answered), or None."""

    @property
    def pending(self) -> tuple[PendingPatRequest, ...]:
        """Requests still waiting for their reply, oldest first."""
        return tuple(self._pending.values())

    def sent(self, message_id: str, request: m.TerminalPayAtTableRequest, now: float) -> None:
        """Remember a request that went out under ``message_id``."""
        self._pending[message_id] = PendingPatRequest(
            message_id=message_id, request=request, sent_at=now
        )

    def abandon(self, message_id: str) -> bool:
        """Stop waiting for the reply to ``message_id``; True if it was pending.

        A late reply then finds nothing pending and is ignored.
        """
        return self._pending.pop(message_id, None) is not None

    def receive(self, message: Message) -> Matched | Unmatched:
        """Match one POS message whose event is in :data:`PAT_REPLY_EVENTS`."""
        data = message.data if message.data is not None else {}
        pending = self._find(message, data)
        if isinstance(pending, Unmatched):
            return pending
        try:
            _READERS[message.event].from_data(data)
        except RemoteProtocolError as exc:
            return Unmatched(reason=f"unreadable {message.event}: {exc}")
        if pending is not None:
            del self._pending[pending.message_id]
        if message.event == m.Event.SET_TABLE_CONFIG:
            self.table_config = dict(data)
        return Matched(pending=pending, data=data)

    def _find(self, message: Message, data: JsonObject) -> PendingPatRequest | Unmatched | None:
        if message.event == m.Event.BILL_PAYMENT_FLOW_ENDED_ACK:
            # §7.23: a new id; the bill is what it answers.
            bill_id = m.as_str(data.get("bill_id"))
            for pending in self._pending.values():
                request = pending.request
                if isinstance(request, m.BillPaymentFlowEndedRequest) and (
                    request.bill_id == bill_id
                ):
                    return pending
            return Unmatched(reason="no bill_payment_flow_ended is pending for this bill_id")
        found = self._pending.get(message.id)
        if found is not None and found.request.reply_event == message.event:
            return found
        if message.event == m.Event.SET_TABLE_CONFIG:
            return None  # the POS's push (patconf id), valid at any time
        if found is not None:
            return Unmatched(reason=f"{found.event} is not answered by {message.event}")
        return Unmatched(reason="answers no pending pay-at-table request")
