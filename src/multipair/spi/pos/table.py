"""Pay at table, POS side (PROTOCOL.md §7.23, §13.14): the terminal asks, the POS answers.

:class:`PayAtTableLink` adds to :class:`~multipair.spi.pos.link.PosLink` the
pay-at-table config and the answers, through the link's ``_pay_at_table_*``
hooks; :class:`~multipair.spi.pos.PosSession` is built on it.

Rules it keeps:

- ``get_table_config`` is always answered under its id: the config set with
  :meth:`PayAtTableLink.set_table_config`, or ``{"pay_at_table_enabled":
  false}`` while none was (§13.14: the 2.9.13 regression of answering
  nothing is not copied).
- The config is pushed (a new ``patconf`` id) when it is set while the link
  is ready, and at every ready-to-transact while idle when it is enabled (§5.3).
- ``get_bill_details``, ``get_open_tables``, ``bill_payment`` and
  ``bill_payment_flow_ended`` are read strictly and handed to the caller as
  :class:`~multipair.spi.pos.events.PayAtTableRequest`; the caller answers
  with :meth:`~PayAtTableLink.reply_bill_details` /
  :meth:`~PayAtTableLink.reply_open_tables` under the request's id, and
  acknowledges a flow end with :meth:`~PayAtTableLink.ack_bill_flow_ended`
  (a new ``authad`` id, only while PairedConnected, after handling it).
- A reply is matched to what it answers before it leaves (STYLE.md 16): only
  a request handed on *on this connection* and not yet answered can be
  answered, once, and only by its kind of reply (``bill_details`` for a bill
  request or a payment, ``open_tables`` for open tables). A connection lost
  forgets its requests: the terminal stopped waiting for them, and its ids
  (plain numbers for some terminals, §2.5) may come back on the next
  connection, where a late answer to an old request would be taken for the
  answer to a new one (another table's bill).
- The terminal never waits for nothing: while pay at table is off, and for a
  request that cannot be read (a :class:`FrameRejected`, ``bad_message``),
  a bill request or payment is answered ``INVALID_TABLE_ID`` and an
  open-tables request with no tables at once; a flow end is then ignored.
"""

from __future__ import annotations

from typing import Final

from multipair.exceptions import InvalidRequest, RemoteProtocolError
from multipair.spi import messages as m
from multipair.spi.envelope import RejectReason
from multipair.spi.pos.events import (
    BillPaymentRefused,
    FrameRejected,
    IgnoredMessage,
    PayAtTableRequest,
)
from multipair.spi.pos.link import PosLink
from multipair.spi.states import SpiStatus

__all__ = ["BILL_UNKNOWN", "PayAtTableLink"]

BILL_UNKNOWN: Final = "INVALID_TABLE_ID"
"""The ``bill_details`` error a POS sends when it has no bill to give (§7.23)."""

_BILL_EVENTS: Final = (str(m.Event.GET_BILL_DETAILS), str(m.Event.BILL_PAYMENT))
_TABLE_EVENTS: Final = (str(m.Event.GET_OPEN_TABLES),)


class PayAtTableLink(PosLink):
    """The link with pay at table. Use :class:`~multipair.spi.pos.PosSession`."""

    _table_config: m.SetTableConfigRequest | None = None
    """Set per instance; None: pay at table never set up (answered as off)."""
    _awaiting: dict[str, str]
    """Requests of this connection handed on and not yet answered: message id -> event
    (a new dict at every :meth:`connection_made`)."""

    @property
    def table_config(self) -> m.SetTableConfigRequest | None:
        """The pay-at-table config (None: never set up, answered as off)."""
        return self._table_config

    def set_table_config(self, config: m.SetTableConfigRequest | None, now: float) -> str | None:
        """Use ``config`` from now on; push it at once when the link is ready (``patconf`` id).

        ``None`` means never set up: ``get_table_config`` is answered off and
        nothing is pushed at ready-to-transact. Returns the pushed message's
        id, if one went out.
        """
        self._table_config = config
        if not self._link_ready():
            return None
        return self._push_table_config(now)

    def reply_bill_details(self, message_id: str, reply: m.BillDetailsReply, now: float) -> bool:
        """Answer ``get_bill_details`` or ``bill_payment`` under its id.

        False, and nothing sent, when not connected or when ``message_id`` names
        no bill request or payment of this connection still unanswered.
        """
        return self._reply(message_id, _BILL_EVENTS, reply, now)

    def reply_open_tables(self, message_id: str, reply: m.OpenTablesReply, now: float) -> bool:
        """Answer a ``get_open_tables`` under its id; False as :meth:`reply_bill_details`."""
        return self._reply(message_id, _TABLE_EVENTS, reply, now)

    def connection_made(self, now: float) -> None:
        """The websocket is open: no request of it is waiting for an answer yet."""
        super().connection_made(now)
        self._awaiting = {}

    def connection_lost(self, now: float) -> None:
        """The websocket closed: its unanswered requests can no longer be answered."""
        self._awaiting = {}
        super().connection_lost(now)

    def ack_bill_flow_ended(self, bill_id: str, now: float) -> str | None:
        """``bill_payment_flow_ended_ack`` under a new ``authad`` id, only while PairedConnected
        (§13.14); its id, or None when nothing was sent."""
        if not self._link_ready():
            return None
        ack = m.BillPaymentFlowEndedAck(bill_id=bill_id)
        message_id = self._ids.next(ack.id_prefix)
        self._queue(message_id, ack, now)
        return message_id

    # ------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------

    def _link_ready(self) -> bool:
        return self.connected and self.ready and self.status is SpiStatus.PAIRED_CONNECTED

    def _enabled(self) -> bool:
        config = self._table_config
        return config is not None and config.pay_at_table_enabled

    def _push_table_config(self, now: float) -> str:
        config = self._table_config or m.SetTableConfigRequest()
        message_id = self._ids.next(config.id_prefix)
        self._queue(message_id, config, now)
        return message_id

    def _reply(
        self, message_id: str, answers: tuple[str, ...], reply: m.Request, now: float
    ) -> bool:
        if not self.connected or self._awaiting.get(message_id) not in answers:
            return False
        del self._awaiting[message_id]  # one reply per request
        self._queue(message_id, reply, now)
        return True

    def _pay_at_table_ready(self, now: float) -> None:
        if self._enabled():
            self._push_table_config(now)

    def _pay_at_table_message(self, parsed: m.PayAtTableMessage, now: float) -> None:
        event = parsed.event
        if self.status is SpiStatus.UNPAIRED:
            # Without keys no frame is authenticated (the link lets plaintext
            # through only then): a bill or a payment report from anyone on the
            # network would be published, and a forged terminal_ref_id stored
            # would make the real payment's report a "duplicate". Pay at table
            # needs a pairing (§7.23); nothing is answered.
            self._events.append(
                FrameRejected(
                    reason=RejectReason.NO_SECRETS,
                    detail=f"pay-at-table {event!r} before pairing: not authenticated",
                )
            )
            return
        if event == str(m.Event.GET_TABLE_CONFIG):
            self._queue(parsed.id, self._table_config or m.SetTableConfigRequest(), now)
            return
        if not self._enabled():
            self._say_no(parsed, now)
            self._ignored(parsed, "pay at table is not enabled")
            return
        try:
            read = m.read_pay_at_table_request(parsed)
        except (RemoteProtocolError, InvalidRequest) as exc:
            self._say_no(parsed, now)
            detail = str(exc)
            detail = detail if len(detail) <= 200 else detail[:200] + "…"
            self._events.append(FrameRejected(reason=RejectReason.BAD_MESSAGE, detail=detail))
            if event == str(m.Event.BILL_PAYMENT):
                self._ignored(parsed, f"unreadable ({detail})")
            return
        if event in _BILL_EVENTS or event in _TABLE_EVENTS:
            self._awaiting[parsed.id] = event
        self._events.append(PayAtTableRequest(message_id=parsed.id, read=read))

    def _ignored(self, parsed: m.PayAtTableMessage, why: str) -> None:
        """Say what was refused; a payment loudly, naming it: money may have moved."""
        if parsed.event == str(m.Event.BILL_PAYMENT):
            self._events.append(BillPaymentRefused(why=why, payment=_payment_of(parsed)))
        else:
            self._events.append(IgnoredMessage(event=parsed.event, reason=why))

    def _say_no(self, parsed: m.PayAtTableMessage, now: float) -> None:
        """The protocol's "no": no such bill, or no open tables."""
        if parsed.event in _BILL_EVENTS:
            self._queue(
                parsed.id, m.BillDetailsReply(success=False, error_reason=BILL_UNKNOWN), now
            )
        elif parsed.event == str(m.Event.GET_OPEN_TABLES):
            self._queue(parsed.id, m.OpenTablesReply(), now)


def _payment_of(parsed: m.PayAtTableMessage) -> str:
    """Who and how much, from an unread ``bill_payment``, for people (no card data)."""
    data = parsed.data
    details = data.get("payment_details")
    details = details if isinstance(details, dict) else {}
    parts = [
        f"{name}={value!r}"
        for name, value in (
            ("bill_id", data.get("bill_id")),
            ("table_id", data.get("table_id")),
            ("payment_type", data.get("payment_type")),
            ("terminal_ref_id", details.get("terminal_ref_id")),
            ("purchase_amount", details.get("purchase_amount")),
        )
        if isinstance(value, (str, int)) and not isinstance(value, bool)
    ]
    return ", ".join(parts) or "no details"
