"""Pay at table for a Python POS: answer a lane's bill and open-table requests (PROTOCOL.md §7.23).

The terminal drives pay at table and the POS answers. A lane publishes each
question of its terminal as an event carrying a ``request_id`` (opaque) and
``answer_by`` (when the lane stops waiting and answers the terminal itself);
the POS answers with a ``bill_details`` or ``open_tables`` command carrying
that ``request_id`` (docs/broker-schema.md, "Pay at table").

:func:`serve` (``AsyncClient.serve_pay_at_table``) follows one lane's events
and turns them into calls of a :class:`PayAtTableHandler`:

==========================  ====================================  ======================
event                       handler call                          answer sent
==========================  ====================================  ======================
``bill_requested``          ``get_bill(table, operator, bill)``   ``bill_details``
``open_tables_requested``   ``get_open_tables(operator)``         ``open_tables``
``bill_payment_reported``   ``on_payment(report)``, else          ``bill_details``
                            ``get_bill`` (the current bill)
``bill_flow_ended``         ``on_flow_ended(event)``              none (the lane acks)
==========================  ====================================  ======================

Rules it keeps:

- Serving never stops because of the handler: a callback that raises, or
  answers something that is not a bill, is logged and answered as the lane
  answers a request nobody answered (``INVALID_TABLE_ID`` for a bill or a
  payment, an empty list of open tables), so the terminal is told at once
  instead of after the lane's deadline.
- A ``bill_payment_reported`` marked ``duplicate`` (the terminal sent the
  same payment again, same ``terminal_ref_id``) was booked when it first
  came: by default it goes to ``get_bill``, which answers the current bill,
  never to ``on_payment``, so a payment is booked once. Unless this server
  saw ``on_payment`` not book it: it raised, or answered a ``BillError``
  (the terminal was told the payment failed, and sends it again): then the
  repeat goes to ``on_payment`` again, else a card payment taken on the
  terminal would never be booked. So ``on_payment`` raises only when it
  booked nothing.
- Requests are handled one at a time, in stream order (the terminal asks one
  thing at a time); a handler slower than ``answer_by`` makes its answer
  late: the lane has already answered the terminal and refuses it
  (``unknown_request``), which is logged.
- Only requests published after serving starts are answered (``since``
  overrides it): a request already answered by an earlier run must not be
  handled twice, least of all a payment.
- Redis going away does not end it: reading resumes after the last event
  handled, and an answer is sent again until Redis takes it (the handler is
  not asked again).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, TypeVar

import structlog

from multipair import broker_schema as bs
from multipair.broker_schema.events import (
    BillFlowEnded,
    BillPaymentReported,
    BillRequested,
    BillRequestExpired,
    OpenTablesRequested,
)
from multipair.broker_schema.pat_commands import BillDetails, OpenTables
from multipair.client._commands import CancelWatch, build, lane_id
from multipair.client._events import EventReader
from multipair.exceptions import RetryLater

if TYPE_CHECKING:
    from multipair.client._async import AsyncClient

__all__ = [
    "Bill",
    "BillAnswer",
    "BillError",
    "OnServed",
    "OpenTable",
    "PayAtTableHandler",
    "Served",
    "serve",
]

log = structlog.get_logger("multipair.client")

_T = TypeVar("_T")
_MaybeAwaitable: TypeAlias = "_T | Awaitable[_T]"

_FOLLOW_CHUNK_S: Final = 2.0
_FIRST_RETRY_S: Final = 0.25
_LAST_RETRY_S: Final = 5.0
_REMEMBERED: Final = 256
"""How many of its own answers' command ids a server remembers to log their refusal."""


class BillError(StrEnum):
    """Why there is no bill to give: the three errors of ``bill_details`` (§7.23)."""

    INVALID_TABLE_ID = "INVALID_TABLE_ID"
    """No open bill on that table (also for a bill whose total is 0)."""
    INVALID_BILL_ID = "INVALID_BILL_ID"
    """The bill the terminal named is not known (or is closed)."""
    INVALID_OPERATOR_ID = "INVALID_OPERATOR_ID"
    """The operator may not take payments (or is unknown)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bill:
    """A table's bill as the POS knows it: integer cents, ``outstanding_cents`` left to pay.

    ``table_id`` None is the table the terminal asked about. The payments
    already made (``bill_payment_history``) are the lane's to fill in.
    """

    bill_id: str
    total_cents: int
    outstanding_cents: int
    table_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTable:
    """One table with an open bill, for the terminal's list of tables."""

    table_id: str
    outstanding_cents: int
    label: str = ""


BillAnswer: TypeAlias = Bill | BillError
"""What ``get_bill`` and ``on_payment`` return: the bill, or why there is none."""


class PayAtTableHandler(Protocol):
    """What a POS implements to be asked for bills; each method may be ``async`` or not.

    Two methods are optional and found by name:

    - ``on_payment(report: BillPaymentReported) -> BillAnswer``: a payment
      was made on the terminal (``payment_type`` ``card`` or ``cash``,
      ``amount_cents``, ``tip_cents``, ``terminal_ref_id``, the card's
      ``payment_summary``): book it and return the updated bill. Without it,
      payments are answered with ``get_bill`` (the bill as the POS has it).
      Raise (or return a ``BillError``) only when nothing was booked: the
      terminal's repeat of that payment is then offered again.
    - ``on_flow_ended(event: BillFlowEnded) -> None``: the terminal is done
      with the bill (totals by card and cash); nothing to answer.

    A plain (not ``async``) method runs on the event loop: keep it short.
    """

    def get_bill(
        self, table_id: str, operator_id: str, bill_id: str, *, payment_flow_started: bool
    ) -> _MaybeAwaitable[BillAnswer]:
        """The bill of ``table_id`` (``bill_id`` "" when the terminal names none)."""
        ...

    def get_open_tables(self, operator_id: str) -> _MaybeAwaitable[Sequence[OpenTable]]:
        """The tables with an open bill that ``operator_id`` may take payments for."""
        ...


@dataclass(frozen=True, slots=True)
class Served:
    """One request (or notice) handled, for ``on_served`` (the CLI prints these)."""

    event: bs.Event
    """The event handled: a request, ``bill_flow_ended`` or ``bill_request_expired``."""
    answer: Bill | BillError | tuple[OpenTable, ...] | None
    """What was sent back; None when nothing is answered (flow ended, expired)."""
    command_id: str | None
    """The answer's ``command_id``."""
    failure: str | None = None
    """The handler's error when it failed (the protocol's error was sent instead)."""


OnServed: TypeAlias = Callable[[Served], None]
"""Told of each request handled (after its answer was added to the lane's stream)."""


async def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = function(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


def _failed(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Server:
    """One lane's serving: the handler, the answers sent, what to tell ``on_served``."""

    def __init__(
        self,
        client: AsyncClient,
        iid: str,
        handler: PayAtTableHandler,
        *,
        replay_duplicates: bool,
        on_served: OnServed | None,
    ) -> None:
        self.client = client
        self.iid = iid
        self.handler = handler
        self.replay_duplicates = replay_duplicates
        self.on_served = on_served
        self.sent: deque[str] = deque(maxlen=_REMEMBERED)
        # terminal_ref_ids whose on_payment booked nothing (raised, or a BillError): a
        # repeat of one is offered to on_payment again. Oldest forgotten first.
        self.unbooked: OrderedDict[str, None] = OrderedDict()

    async def handle(self, event: bs.Event) -> None:
        match event:
            case BillRequested():
                await self._bill(event, self._get_bill(event))
            case BillPaymentReported():
                on_payment = getattr(self.handler, "on_payment", None)
                ref = event.terminal_ref_id
                retry = bool(ref) and ref in self.unbooked
                if on_payment is None or (
                    event.duplicate and not self.replay_duplicates and not retry
                ):
                    await self._bill(event, self._get_bill(event))
                else:
                    await self._bill(event, _call(on_payment, event), booking=ref)
            case OpenTablesRequested():
                await self._tables(event)
            case BillFlowEnded():
                failure = None
                on_flow_ended = getattr(self.handler, "on_flow_ended", None)
                if on_flow_ended is not None:
                    try:
                        await _call(on_flow_ended, event)
                    except Exception as exc:
                        failure = _failed(exc)
                        log.exception("pay at table: on_flow_ended failed", **self._about(event))
                self._tell(Served(event, None, None, failure))
            case BillRequestExpired():
                log.warning(
                    "pay at table: request not answered in time; the lane answered it",
                    request=event.request,
                    error_sent=event.error_sent,
                    **self._about(event),
                )
                self._tell(Served(event, None, None))
            case bs.CommandRejected() if event.command_id in self.sent:
                log.warning(
                    "pay at table: answer refused by the lane",
                    command_id=event.command_id,
                    reason=event.reason,
                    detail=event.detail,
                    instance_id=self.iid,
                )

    def _get_bill(self, event: BillRequested | BillPaymentReported) -> Awaitable[Any]:
        # A payment is made in a payment flow: the terminal has started paying the bill.
        started = event.payment_flow_started if isinstance(event, BillRequested) else True
        return _call(
            self.handler.get_bill,
            event.table_id,
            event.operator_id,
            event.bill_id,
            payment_flow_started=started,
        )

    async def _bill(
        self,
        event: BillRequested | BillPaymentReported,
        pending: Awaitable[Any],
        *,
        booking: str | None = None,
    ) -> None:
        """Answer ``event`` with what ``pending`` gives; ``booking``: the terminal_ref_id of a
        payment ``pending`` (``on_payment``) books."""
        failure = None
        # What the lane itself sends when nobody answers (bill_request_expired's error_sent).
        fallback = BillError.INVALID_TABLE_ID
        try:
            answer = await pending
            command = self._bill_command(event, answer)
        except Exception as exc:
            failure = _failed(exc)
            log.exception(
                "pay at table: no bill from the handler; answering the protocol error",
                error_sent=str(fallback),
                **self._about(event),
            )
            answer = fallback
            command = self._bill_command(event, answer)
        if booking:
            self._note_booking(booking, booked=failure is None and isinstance(answer, Bill))
        await self._send(command)
        self._tell(Served(event, answer, command.command_id, failure))

    def _note_booking(self, ref: str, *, booked: bool) -> None:
        if booked:
            self.unbooked.pop(ref, None)
            return
        self.unbooked[ref] = None
        self.unbooked.move_to_end(ref)
        while len(self.unbooked) > _REMEMBERED:
            self.unbooked.popitem(last=False)

    def _bill_command(
        self, event: BillRequested | BillPaymentReported, answer: object
    ) -> bs.Command:
        if isinstance(answer, BillError):
            return build(BillDetails, request_id=event.request_id, error=str(answer))
        if not isinstance(answer, Bill):
            raise TypeError(f"expected a Bill or a BillError, got {type(answer).__name__}")
        table_id = answer.table_id if answer.table_id is not None else event.table_id
        return build(
            BillDetails,
            request_id=event.request_id,
            bill_id=answer.bill_id,
            table_id=table_id,
            total_cents=answer.total_cents,
            outstanding_cents=answer.outstanding_cents,
        )

    async def _tables(self, event: OpenTablesRequested) -> None:
        failure = None
        try:
            tables = tuple(await _call(self.handler.get_open_tables, event.operator_id))
            command = self._tables_command(event, tables)
        except Exception as exc:
            failure = _failed(exc)
            log.exception(
                "pay at table: no open tables from the handler; answering an empty list",
                **self._about(event),
            )
            tables = ()
            command = self._tables_command(event, tables)
        await self._send(command)
        self._tell(Served(event, tables, command.command_id, failure))

    def _tables_command(
        self, event: OpenTablesRequested, tables: tuple[OpenTable, ...]
    ) -> bs.Command:
        for table in tables:
            if not isinstance(table, OpenTable):
                raise TypeError(f"expected OpenTable items, got {type(table).__name__}")
        return build(
            OpenTables,
            request_id=event.request_id,
            tables=tuple(
                {"table_id": t.table_id, "label": t.label, "outstanding_cents": t.outstanding_cents}
                for t in tables
            ),
        )

    async def _send(self, command: bs.Command) -> None:
        """Add the answer, waiting out a Redis outage: the handler is never asked twice."""
        self.sent.append(command.command_id)
        for delay in _retry_delays():
            try:
                await self.client.send(self.iid, command)
                return
            except RetryLater as exc:
                log.warning(
                    "pay at table: Redis away; sending the answer again",
                    command_id=command.command_id,
                    retry_in_s=delay,
                    error=str(exc),
                    instance_id=self.iid,
                )
                await asyncio.sleep(delay)

    def _tell(self, served: Served) -> None:
        if self.on_served is None:
            return
        try:
            self.on_served(served)
        except Exception:
            log.exception("pay at table: on_served failed", **self._about(served.event))

    def _about(self, event: bs.Event) -> dict[str, Any]:
        return {
            "instance_id": self.iid,
            "event_type": event.type,
            "request_id": getattr(event, "request_id", None),
        }


async def serve(
    client: AsyncClient,
    reader: EventReader,
    instance_id: str,
    handler: PayAtTableHandler,
    *,
    since: str = "$",
    replay_duplicates: bool = False,
    on_served: OnServed | None = None,
) -> None:
    """Answer the lane's pay-at-table requests with ``handler`` until cancelled.

    See :meth:`AsyncClient.serve_pay_at_table`.
    """
    instance_id = lane_id(instance_id)
    server = _Server(
        client,
        instance_id,
        handler,
        replay_duplicates=replay_duplicates,
        on_served=on_served,
    )
    # LaneNotFound for an unknown lane before anything else (count=0 reads no event).
    async for _ in client.events(instance_id, follow=False, count=0):
        pass
    loop = asyncio.get_running_loop()
    cancelled = CancelWatch()
    cursor = await reader.last_id(instance_id) if since == "$" else since
    delays = _retry_delays()
    while True:
        # Bounded reads: a cancellation redis-py swallowed (CancelWatch) is seen between them.
        cancelled.check()
        try:
            deadline = loop.time() + _FOLLOW_CHUNK_S
            async with aclosing(reader.follow(instance_id, cursor, deadline)) as events:
                async for entry_id, event in events:
                    await server.handle(event)
                    cursor = entry_id
                    delays = _retry_delays()
        except RetryLater as exc:
            # Redis away: waited out, following again after the last event handled.
            delay = next(delays)
            log.warning(
                "pay at table: Redis away; following the events again",
                after=cursor,
                retry_in_s=delay,
                error=str(exc),
                instance_id=instance_id,
            )
            await asyncio.sleep(delay)


def _retry_delays() -> Iterator[float]:
    """0.25 s, doubling up to 5 s, for ever: an outage is waited out, never given up on."""
    delay = _FIRST_RETRY_S
    while True:
        yield delay
        delay = min(delay * 2, _LAST_RETRY_S)
