"""Pay at table in the lane (PROTOCOL.md §7.23): the terminal asks, the POS answers through Redis.

The session hands the lane each terminal request
(:class:`~multipair.spi.pos.PayAtTableRequest`); :class:`PayAtTable` turns it
into an event for the POS, keeps it *pending* in memory until the POS
answers or its deadline passes, and relays the answer to the terminal under
the request's id. What it does, event by event:

- ``get_bill_details`` → ``bill_requested``; ``get_open_tables`` →
  ``open_tables_requested``; ``bill_payment`` → ``bill_payment_reported``.
  Each carries a lane-chosen ``request_id`` (opaque) and ``answer_by``: the
  arrival plus the profile's ``answer_timeout_ms`` (10 000 by default). The
  event is written in the round of the terminal's frame (the lane's module
  docstring), so a Redis outage is ridden out as for every other event.
- ``bill_payment``: the first report of a ``terminal_ref_id`` is stored in
  ``mp:lane:{ID}:pat:payments`` (``HSETNX``, field terminal_ref_id, value the
  ``bill_payment_reported`` event's JSON) in the same write as its event; a
  repeat is published with ``duplicate: true`` and stores nothing. A
  payment without a ``terminal_ref_id`` is stored under ``~<request_id>``
  and never counts as a repeat.
- ``bill_payment_flow_ended`` → ``bill_flow_ended`` (no answer awaited);
  once it is written the terminal gets ``bill_payment_flow_ended_ack``
  (while the link is ready, §13.14).
- The POS answers with ``bill_details`` (for a bill request or a payment)
  or ``open_tables`` naming the ``request_id``; the lane relays it at once
  (control commands) and answers the command ``command_accepted``. A
  ``bill_details`` with the bill gets its ``bill_payment_history`` from the
  stored payments of that ``bill_id`` (oldest first); its ``table_id``
  defaults to the request's, and with ``error`` its ``bill_id`` too. A bill
  whose total is 0 goes out as ``INVALID_TABLE_ID``, as the reference
  client does. A ``request_id`` that is not pending (never asked, already
  answered, expired, or of the other kind) is refused ``unknown_request``;
  with the link down the request is dropped and the command refused
  ``terminal_unavailable``.
- At ``answer_by`` without an answer, the terminal gets the protocol's "no"
  (``bill_details`` ``success: false``, ``INVALID_TABLE_ID``; an empty
  ``open_tables``) and ``bill_request_expired`` is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import itertools
import secrets
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import orjson

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, InvalidRequest
from multipair.logs import get_logger
from multipair.redis_conn import as_text
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.store.profiles import DEFAULT_ANSWER_TIMEOUT_MS, PayAtTableConfig

if TYPE_CHECKING:
    from multipair.worker.lane import Lane
    from multipair.worker.session_events import RoundWrites

__all__ = ["NO_REF_PREFIX", "PayAtTable", "Pending", "table_request"]

log = get_logger("multipair.worker.lane")

NO_REF_PREFIX: Final = "~"
"""Field prefix (before the request_id) of a stored payment that has no terminal_ref_id."""

_BILL_REQUESTS: Final = frozenset({str(m.Event.GET_BILL_DETAILS), str(m.Event.BILL_PAYMENT)})


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


class PayAtTable:
    """The lane's pending pay-at-table requests and their answers."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.pending: dict[str, Pending] = {}
        self.config: PayAtTableConfig | None = None
        self._ids = itertools.count(1)
        # Unique across restarts of the lane: an answer meant for a request of an
        # earlier process can never reach one of this process.
        self._run = secrets.token_hex(4)
        self._stored: set[str] = set()  # terminal_ref_ids stored by this process
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------
    # The terminal asks (in the round of its frame, under the session lock)
    # ------------------------------------------------------------------

    async def on_request(self, event: spi.PayAtTableRequest, writes: RoundWrites) -> None:
        """Publish ``event``'s request in the round's write; keep it pending if it is asked."""
        lane = self.lane
        request = event.read.request
        at = lane.now()
        request_id = f"{self._run}-{next(self._ids)}"
        timeout_ms = self.config.answer_timeout_ms if self.config else DEFAULT_ANSWER_TIMEOUT_MS
        deadline = lane.clock.time() + timeout_ms / 1000
        answer_by = _dt.datetime.fromtimestamp(deadline, _dt.UTC)
        base: dict[str, Any] = {"instance_id": lane.instance_id, "at": at, "request_id": request_id}
        batch = writes.batch
        match request:
            case m.GetBillDetailsRequest():
                out: bs.Event = bs.BillRequested(
                    **base,
                    answer_by=answer_by,
                    table_id=request.table_id,
                    operator_id=request.operator_id,
                    bill_id=request.bill_id,
                    payment_flow_started=request.payment_flow_started,
                )
                pending = Pending(
                    request_id=request_id,
                    message_id=event.message_id,
                    request=event.event,
                    deadline=deadline,
                    table_id=request.table_id,
                    bill_id=request.bill_id,
                )
            case m.GetOpenTablesRequest():
                out = bs.OpenTablesRequested(
                    **base, answer_by=answer_by, operator_id=request.operator_id
                )
                pending = Pending(
                    request_id=request_id,
                    message_id=event.message_id,
                    request=event.event,
                    deadline=deadline,
                )
            case m.BillPaymentRequest():
                out = await self._payment(event, request, base, answer_by, batch)
                pending = Pending(
                    request_id=request_id,
                    message_id=event.message_id,
                    request=event.event,
                    deadline=deadline,
                    table_id=request.table_id,
                    bill_id=request.bill_id,
                )
            case m.BillPaymentFlowEndedRequest():
                lane.event_writes.add(batch, _flow_ended(request, base))
                bill_id = request.bill_id
                writes.after.append(partial(self._ack, bill_id))
                log.info("pay at table: flow ended", bill_id=bill_id, request_id=request_id)
                return
        lane.event_writes.add(batch, out)
        self.pending[request_id] = pending
        self._wake.set()
        log.info("pay at table: asked the POS", request=pending.request, request_id=request_id)

    async def _payment(
        self,
        event: spi.PayAtTableRequest,
        request: m.BillPaymentRequest,
        base: dict[str, Any],
        answer_by: _dt.datetime,
        batch: Any,
    ) -> bs.Event:
        """``bill_payment_reported``, and (for a first report) its storing, in ``batch``."""
        lane = self.lane
        details = event.read.details or m.BillPaymentDetails(purchase_amount=0)
        ref = details.terminal_ref_id
        key = lane.keys.pat_payments(lane.instance_id)
        duplicate = False
        if ref:
            duplicate = ref in self._stored or bool(
                await lane.until_redis(partial(lane.redis.hexists, key, ref))
            )
        reported = bs.BillPaymentReported(
            **base,
            answer_by=answer_by,
            bill_id=request.bill_id,
            table_id=request.table_id,
            operator_id=request.operator_id,
            payment_type=request.payment_type,
            amount_cents=details.purchase_amount,
            tip_cents=details.tip_amount,
            surcharge_cents=details.surcharge_amount,
            terminal_ref_id=ref,
            duplicate=duplicate,
            payment_summary=event.read.payment_summary,
        )
        if not duplicate:
            field = ref or f"{NO_REF_PREFIX}{base['request_id']}"
            batch.hsetnx(key, field, bs.event_to_json(reported))
            if ref:
                self._stored.add(ref)
        log.info(
            "pay at table: payment reported",
            bill_id=request.bill_id,
            amount_cents=details.purchase_amount,
            duplicate=duplicate,
        )
        return reported

    def _ack(self, bill_id: str) -> None:
        """After ``bill_flow_ended`` is written: acknowledge the terminal (still in the round)."""
        self.lane.session.ack_bill_flow_ended(bill_id, self.lane.clock.time())

    # ------------------------------------------------------------------
    # The POS answers (control commands)
    # ------------------------------------------------------------------

    def _take(self, request_id: str, kinds: frozenset[str], command_type: str) -> Pending:
        pending = self.pending.get(request_id)
        if pending is None:
            raise CommandError(
                bs.Reason.UNKNOWN_REQUEST,
                f"request_id {request_id!r} is not waiting for an answer "
                "(never asked, already answered, or expired)",
            )
        if pending.request not in kinds:
            raise CommandError(
                bs.Reason.UNKNOWN_REQUEST,
                f"request_id {request_id!r} is a {pending.request}, which {command_type} "
                "does not answer",
            )
        del self.pending[request_id]
        return pending

    async def answer_bill(self, command: bs.BillDetails) -> None:
        """Relay ``bill_details`` to the terminal; ``CommandError`` when it cannot be."""
        pending = self._take(command.request_id, _BILL_REQUESTS, command.type)
        table_id = command.table_id if command.table_id is not None else pending.table_id
        error = command.error
        if error is None and command.total_cents == 0:
            error = spi.BILL_UNKNOWN  # §7.23: a bill of 0 is no bill
        try:
            if error is not None:
                reply = m.BillDetailsReply(
                    success=False,
                    bill_id=command.bill_id if command.bill_id is not None else pending.bill_id,
                    table_id=table_id,
                    error_reason=error,
                )
            else:
                assert command.bill_id is not None  # BillDetails.check_together
                reply = m.BillDetailsReply(
                    success=True,
                    bill_id=command.bill_id,
                    table_id=table_id,
                    bill_total_amount=command.total_cents or 0,
                    bill_outstanding_amount=command.outstanding_cents or 0,
                    bill_payment_history=await self._history(command.bill_id),
                )
        except InvalidRequest as exc:
            raise CommandError(bs.Reason.INVALID_VALUE, str(exc)) from None
        await self._send(
            pending,
            lambda now: self.lane.session.reply_bill_details(pending.message_id, reply, now),
        )

    async def answer_tables(self, command: bs.OpenTables) -> None:
        """Relay ``open_tables`` to the terminal; ``CommandError`` when it cannot be."""
        pending = self._take(
            command.request_id, frozenset({str(m.Event.GET_OPEN_TABLES)}), command.type
        )
        try:
            reply = m.OpenTablesReply(
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
        await self._send(
            pending, lambda now: self.lane.session.reply_open_tables(pending.message_id, reply, now)
        )

    async def _send(self, pending: Pending, reply: Any) -> None:
        sent = await self.lane.step(reply)
        if not sent:
            raise CommandError(
                bs.Reason.TERMINAL_UNAVAILABLE,
                f"the terminal is not connected: its {pending.request} "
                f"{pending.request_id!r} was dropped unanswered",
            )
        log.info("pay at table: answered", request=pending.request, request_id=pending.request_id)

    async def _history(self, bill_id: str) -> tuple[m.PaymentHistoryEntry, ...]:
        """The stored payments of ``bill_id``, oldest first, as ``bill_payment_history``."""
        lane = self.lane
        raw = await lane.until_redis(
            partial(lane.redis.hgetall, lane.keys.pat_payments(lane.instance_id))
        )
        found: list[tuple[str, m.PaymentHistoryEntry]] = []
        for value in raw.values():
            try:
                stored = orjson.loads(as_text(value))
                if stored.get("bill_id") != bill_id:
                    continue
                entry = m.PaymentHistoryEntry(
                    payment_type=str(stored["payment_type"]),
                    payment_summary=dict(stored.get("payment_summary") or {}),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                log.warning("pay at table: a stored payment is unreadable; left out")
                continue
            found.append((str(stored.get("at", "")), entry))
        found.sort(key=lambda item: item[0])
        return tuple(entry for _, entry in found)

    # ------------------------------------------------------------------
    # Deadlines
    # ------------------------------------------------------------------

    async def expiry_loop(self) -> None:
        """Tell the terminal "no" for every request still pending at its deadline, until stopped."""
        lane = self.lane
        while not lane.stopped.is_set():
            self._wake.clear()
            if not self.pending:
                await _either(self._wake.wait(), lane.stopped.wait())
                continue
            due = min(p.deadline for p in self.pending.values())
            delay = due - lane.clock.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await _either(self._wake.wait(), lane.stopped.wait())
                continue
            now = lane.clock.time()
            for pending in [p for p in self.pending.values() if p.deadline <= now]:
                if self.pending.pop(pending.request_id, None) is not None:
                    await self._expire(pending)

    async def _expire(self, pending: Pending) -> None:
        session = self.lane.session
        if pending.request in _BILL_REQUESTS:
            error = spi.BILL_UNKNOWN
            reply = m.BillDetailsReply(
                success=False,
                bill_id=pending.bill_id,
                table_id=pending.table_id,
                error_reason=error,
            )
            await self.lane.step(
                lambda now: session.reply_bill_details(pending.message_id, reply, now)
            )
        else:
            error = ""
            await self.lane.step(
                lambda now: session.reply_open_tables(pending.message_id, m.OpenTablesReply(), now)
            )
        log.warning(
            "pay at table: no answer in time",
            request=pending.request,
            request_id=pending.request_id,
        )
        await self.lane.publish(
            bs.BillRequestExpired,
            request_id=pending.request_id,
            request=pending.request,
            error_sent=error,
        )


def _flow_ended(request: m.BillPaymentFlowEndedRequest, base: dict[str, Any]) -> bs.Event:
    return bs.BillFlowEnded(
        **base,
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


async def _either(*waits: Any) -> None:
    """Wait for the first of ``waits`` (coroutines of events); cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
