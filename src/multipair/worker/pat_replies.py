"""Pay at table, the lane's decisions (pure): what the POS is told, and what the terminal gets.

The shell (:mod:`multipair.worker.pay_at_table`) reads Redis and the clock
and calls these; nothing here awaits, reads a clock or touches Redis
(docs/architecture.md, "Decide purely, act in a shell").

- :func:`table_request`: the profile's config as the ``set_table_config``
  the session sends (``enabled`` → ``pay_at_table_enabled``, ``operator_ids``
  → ``operator_id_list``; ``answer_timeout_ms`` stays in the lane).
- :func:`take`: which pending request an answer is for, or
  ``unknown_request``.
- :func:`bill_reply` / :func:`tables_reply`: the POS's answer as the reply to
  the terminal; :func:`refusal`: the protocol's "no" when no answer came,
  :func:`expired_event` the event that says so.
- :func:`request_event`, :func:`payment_event`, :func:`flow_ended_event`:
  the events the POS is asked with; :func:`payment_history`: a bill's
  history from the stored payments.
- :func:`bill_entry`, :func:`bill_range`, :func:`entry_field`,
  :func:`prune_before_ms`: how a stored payment is indexed by its bill
  (``pat:bills``) and aged (``pat:payments_at``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, InternalError, InvalidRequest
from multipair.spi import messages as m
from multipair.spi.pos import BILL_UNKNOWN, PayAtTableRequest
from multipair.store.profiles import PayAtTableConfig

__all__ = [
    "BILL_REQUESTS",
    "NO_REF_PREFIX",
    "TABLE_REQUESTS",
    "Pending",
    "bill_entry",
    "bill_range",
    "bill_reply",
    "entry_field",
    "expired_event",
    "flow_ended_event",
    "payment_event",
    "payment_field",
    "payment_history",
    "prune_before_ms",
    "refusal",
    "request_event",
    "table_request",
    "tables_reply",
    "take",
]

BILL_REQUESTS: Final = frozenset({str(m.Event.GET_BILL_DETAILS), str(m.Event.BILL_PAYMENT)})
"""The requests ``bill_details`` answers."""
TABLE_REQUESTS: Final = frozenset({str(m.Event.GET_OPEN_TABLES)})
"""The requests ``open_tables`` answers."""
NO_REF_PREFIX: Final = "~"
"""Field prefix (before the request_id) of a stored payment that has no terminal_ref_id."""


def table_request(config: PayAtTableConfig | None) -> m.SetTableConfigRequest | None:
    """The ``set_table_config`` the session sends for the profile's config (None: never set up)."""
    if config is None:
        return None
    return m.SetTableConfigRequest(
        pay_at_table_enabled=config.enabled,
        operator_id_enabled=config.operator_id_enabled,
        split_by_amount_enabled=config.split_by_amount_enabled,
        equal_split_enabled=config.equal_split_enabled,
        tipping_enabled=config.tipping_enabled,
        summary_report_enabled=config.summary_report_enabled,
        pay_button_label=config.pay_button_label,
        operator_id_label=config.operator_id_label,
        table_id_label=config.table_id_label,
        operator_id_list=config.operator_ids,
        table_retrieval_enabled=config.table_retrieval_enabled,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """A terminal request waiting for the POS's answer."""

    request_id: str
    message_id: str
    """The terminal's id: the reply's."""
    request: str
    """``get_bill_details``, ``get_open_tables`` or ``bill_payment``."""
    deadline: float
    """Wall time (the lane clock's) when the lane stops waiting."""
    table_id: str = ""
    bill_id: str = ""


def take(
    pending: Mapping[str, Pending], request_id: str, kinds: frozenset[str], command_type: str
) -> Pending:
    """The pending request ``request_id`` names, if ``command_type`` answers it.

    Raises ``CommandError('unknown_request')`` otherwise: never asked, already
    answered, expired, or a request of the other kind.
    """
    found = pending.get(request_id)
    if found is None:
        raise CommandError(
            bs.Reason.UNKNOWN_REQUEST,
            f"request_id {request_id[:80]!r} is not waiting for an answer "
            "(never asked, already answered, or expired)",
        )
    if found.request not in kinds:
        raise CommandError(
            bs.Reason.UNKNOWN_REQUEST,
            f"request_id {request_id[:80]!r} is a {found.request}, "
            f"which {command_type} does not answer",
        )
    return found


def bill_reply(
    command: bs.BillDetails, pending: Pending, history: tuple[m.PaymentHistoryEntry, ...]
) -> m.BillDetailsReply:
    """The ``bill_details`` the terminal gets for ``command`` (which answers ``pending``).

    ``table_id`` defaults to the request's, and with an error ``bill_id`` too;
    a bill whose total is 0 is no bill: ``INVALID_TABLE_ID`` (§7.23).
    """
    table_id = command.table_id if command.table_id is not None else pending.table_id
    error = command.error
    if error is None and command.total_cents == 0:
        error = BILL_UNKNOWN
    try:
        if error is not None:
            return m.BillDetailsReply(
                success=False,
                bill_id=command.bill_id if command.bill_id is not None else pending.bill_id,
                table_id=table_id,
                error_reason=error,
            )
        return m.BillDetailsReply(
            success=True,
            bill_id=command.bill_id or "",
            table_id=table_id,
            bill_total_amount=command.total_cents or 0,
            bill_outstanding_amount=command.outstanding_cents or 0,
            bill_payment_history=history,
        )
    except InvalidRequest as exc:
        raise CommandError(bs.Reason.INVALID_VALUE, str(exc)) from None


def tables_reply(command: bs.OpenTables) -> m.OpenTablesReply:
    """The ``open_tables`` the terminal gets for ``command``."""
    try:
        return m.OpenTablesReply(
            tables=tuple(
                m.OpenTable(
                    table_id=table["table_id"],
                    label=table.get("label", ""),
                    bill_outstanding_amount=table.get("outstanding_cents", 0),
                )
                for table in command.tables
            )
        )
    except InvalidRequest as exc:
        raise CommandError(bs.Reason.INVALID_VALUE, str(exc)) from None


def refusal(pending: Pending) -> tuple[m.BillDetailsReply | m.OpenTablesReply, str]:
    """The protocol's "no" for a request nobody answered, and the ``error_sent`` it names."""
    if pending.request in BILL_REQUESTS:
        reply = m.BillDetailsReply(
            success=False,
            bill_id=pending.bill_id,
            table_id=pending.table_id,
            error_reason=BILL_UNKNOWN,
        )
        return reply, BILL_UNKNOWN
    return m.OpenTablesReply(), ""


def expired_event(
    instance_id: str, at: _dt.datetime, pending: Pending, error: str, *, sent: bool
) -> bs.BillRequestExpired:
    """``bill_request_expired`` of ``pending``, whose refusal named ``error`` (:func:`refusal`).

    ``error_sent`` is what the terminal was told: ``""`` when nothing was sent
    (the link was down, or dropped since the request came).
    """
    return bs.BillRequestExpired(
        instance_id=instance_id,
        at=at,
        request_id=pending.request_id,
        request=pending.request,
        error_sent=error if sent else "",
    )


def payment_history(
    stored: Iterable[str | bytes], bill_id: str
) -> tuple[m.PaymentHistoryEntry, ...]:
    """The ``bill_payment_history`` of ``bill_id``: its stored payments, oldest first.

    ``stored`` are the values of the payments hash (``bill_payment_reported``
    JSON); an unreadable one is left out, never fatal.
    """
    found: list[tuple[str, m.PaymentHistoryEntry]] = []
    for value in stored:
        try:
            data = orjson.loads(value)
            if data.get("bill_id") != bill_id:
                continue
            summary = data.get("payment_summary") or {}
            entry = m.PaymentHistoryEntry(
                payment_type=str(data["payment_type"]), payment_summary=dict(summary)
            )
            found.append((str(data.get("at", "")), entry))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            continue
    found.sort(key=lambda item: item[0])
    return tuple(entry for _, entry in found)


def bill_entry(bill_id: str, field: str) -> bytes:
    """The index entry of a stored payment: ``<byte length of bill_id>:<bill_id><field>``.

    The length makes it unambiguous whatever the ids hold: the entries of one
    bill are exactly those that start with ``<length>:<bill_id>``.
    """
    bill = bill_id.encode()
    return b"%d:" % len(bill) + bill + field.encode()


def bill_range(bill_id: str) -> tuple[bytes, bytes]:
    """``ZRANGEBYLEX`` bounds of the entries of ``bill_id`` (:func:`bill_entry`): every
    member that starts with its prefix, and no other."""
    prefix = bill_entry(bill_id, "")
    end = prefix.rstrip(b"\xff")  # never empty: the prefix holds ':'
    return b"[" + prefix, b"(" + end[:-1] + bytes([end[-1] + 1])


def entry_field(entry: bytes) -> str:
    """The ``pat:payments`` field an index entry (:func:`bill_entry`) points to."""
    length, _, rest = entry.partition(b":")
    return rest[int(length) :].decode(errors="replace")


def prune_before_ms(now_s: float, retention_s: int) -> int:
    """Stored payments older than this (ms) are pruned."""
    return int((now_s - retention_s) * 1000)


def payment_field(event: bs.BillPaymentReported) -> str:
    """The payments hash field of a first report: its terminal_ref_id, or ``~<request_id>``."""
    return event.terminal_ref_id or f"{NO_REF_PREFIX}{event.request_id}"


def request_event(
    instance_id: str,
    at: _dt.datetime,
    request_id: str,
    answer_by: _dt.datetime,
    asked: PayAtTableRequest,
) -> tuple[bs.Event, Pending | None]:
    """The event a bill or tables request publishes, and what is kept pending (None for a
    flow end, which is only told). A payment's event comes from :func:`payment_event`."""
    request = asked.read.request
    deadline = answer_by.timestamp()
    base: dict[str, Any] = {"instance_id": instance_id, "at": at, "request_id": request_id}
    match request:
        case m.GetBillDetailsRequest():
            return bs.BillRequested(
                **base,
                answer_by=answer_by,
                table_id=request.table_id,
                operator_id=request.operator_id,
                bill_id=request.bill_id,
                payment_flow_started=request.payment_flow_started,
            ), Pending(
                request_id=request_id,
                message_id=asked.message_id,
                request=asked.event,
                deadline=deadline,
                table_id=request.table_id,
                bill_id=request.bill_id,
            )
        case m.GetOpenTablesRequest():
            return bs.OpenTablesRequested(
                **base, answer_by=answer_by, operator_id=request.operator_id
            ), Pending(
                request_id=request_id,
                message_id=asked.message_id,
                request=asked.event,
                deadline=deadline,
            )
        case m.BillPaymentFlowEndedRequest():
            return flow_ended_event(instance_id, at, request_id, request), None
    raise InternalError(f"{asked.event} is published by payment_event, not request_event")


def payment_event(
    instance_id: str,
    at: _dt.datetime,
    request_id: str,
    answer_by: _dt.datetime,
    asked: PayAtTableRequest,
    *,
    duplicate: bool,
) -> tuple[bs.BillPaymentReported, Pending]:
    """``bill_payment_reported`` of a ``bill_payment``, and its pending request."""
    request = asked.read.request
    assert isinstance(request, m.BillPaymentRequest)
    details = asked.read.details or m.BillPaymentDetails(purchase_amount=0)
    event = bs.BillPaymentReported(
        instance_id=instance_id,
        at=at,
        request_id=request_id,
        answer_by=answer_by,
        bill_id=request.bill_id,
        table_id=request.table_id,
        operator_id=request.operator_id,
        payment_type=request.payment_type,
        amount_cents=details.purchase_amount,
        tip_cents=details.tip_amount,
        surcharge_cents=details.surcharge_amount,
        terminal_ref_id=details.terminal_ref_id,
        duplicate=duplicate,
        payment_summary=asked.read.payment_summary,
    )
    return event, Pending(
        request_id=request_id,
        message_id=asked.message_id,
        request=asked.event,
        deadline=answer_by.timestamp(),
        table_id=request.table_id,
        bill_id=request.bill_id,
    )


def flow_ended_event(
    instance_id: str, at: _dt.datetime, request_id: str, request: m.BillPaymentFlowEndedRequest
) -> bs.BillFlowEnded:
    """``bill_flow_ended`` of a ``bill_payment_flow_ended``."""
    return bs.BillFlowEnded(
        instance_id=instance_id,
        at=at,
        request_id=request_id,
        bill_id=request.bill_id,
        table_id=request.table_id,
        operator_id=request.operator_id,
        bill_total_cents=request.bill_total_amount,
        bill_outstanding_cents=request.bill_outstanding_amount,
        card_total_count=request.card_total_count,
        card_total_cents=request.card_total_amount,
        cash_total_count=request.cash_total_count,
        cash_total_cents=request.cash_total_amount,
    )
