"""The waiter's handheld: pay at table played on a virtual terminal (PROTOCOL.md §7.23, §10.17).

The terminal starts every pay-at-table exchange and waits for the POS's
reply (:class:`multipair.spi.terminal.Terminal` matches it by id, the
flow-ended ack by ``bill_id``); this shell sends, waits with a timeout and
abandons the request when none comes (:class:`NoReply`), so a late reply is
ignored and the terminal stays usable. A card payment goes through the
simulated bank like a purchase (the cents table of
:mod:`multipair.simulator.rules`: ``.51`` declines, ``.56`` approves half,
anything else approves); a declined payment is not reported to the POS,
as a real terminal reports only payments taken. The totals of each bill's
payment flow are counted here for ``bill_payment_flow_ended``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multipair.exceptions import LocalProtocolError
from multipair.simulator.bank import Bank
from multipair.simulator.rules import Behaviour
from multipair.spi import messages as m
from multipair.spi.envelope import JsonObject
from multipair.spi.terminal import Outcome, PayAtTableAnswered

if TYPE_CHECKING:
    from multipair.simulator.virtual import SimulatedTerminal

__all__ = ["Exchange", "Handheld", "NoReply", "Payment"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One request the terminal sent and the POS's matched reply."""

    request_id: str
    request: m.TerminalPayAtTableRequest
    reply: PayAtTableAnswered

    def to_json(self) -> JsonObject:
        """The control API's form: what went out and what came back."""
        return {
            "request_id": self.request_id,
            "request": {"event": str(self.request.event), "data": self.request.to_data()},
            "reply": {
                "event": self.reply.reply_event,
                "message_id": self.reply.message_id,
                "data": self.reply.data,
            },
        }


class NoReply(Exception):
    """The POS did not answer in time; the request was abandoned."""

    def __init__(
        self, request_id: str, request: m.TerminalPayAtTableRequest, patience: float
    ) -> None:
        super().__init__(f"no {request.reply_event} from the POS within {patience:g} s")
        self.request_id = request_id
        self.request = request
        self.done: list[JsonObject] = []
        """What a multi-step flow completed before this step (``pat/session``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Payment:
    """A bill payment: the details the bank wrote, and the exchange if it was reported."""

    details: JsonObject
    exchange: Exchange | None

    def to_json(self) -> JsonObject:
        """The control API's form; ``reply`` is null for a declined card (nothing was sent)."""
        if self.exchange is None:
            return {"sent": False, "reply": None, "payment_details": self.details}
        return {"sent": True, **self.exchange.to_json(), "payment_details": self.details}


@dataclass(slots=True)
class _FlowTotals:
    card_count: int = 0
    card_amount: int = 0
    cash_count: int = 0
    cash_amount: int = 0


class Handheld:
    """Pay at table on one :class:`~multipair.simulator.virtual.SimulatedTerminal`."""

    def __init__(self, terminal: SimulatedTerminal) -> None:
        self._terminal = terminal
        self._waiters: dict[str, asyncio.Future[PayAtTableAnswered]] = {}
        self._flows: dict[str, _FlowTotals] = {}
        self._bills: dict[str, tuple[int, int]] = {}
        self.last_payment: m.BillPaymentRequest | None = None
        """The last bill payment sent, which ``repeat`` sends again unchanged."""

    # ------------------------------------------------------------------ from the session

    def answered(self, event: PayAtTableAnswered) -> None:
        """The session matched a reply: note the bill's totals and wake the waiting route."""
        data = event.data
        if event.reply_event == m.Event.BILL_DETAILS and data.get("success") is True:
            bill_id = m.as_str(data.get("bill_id"))
            total = m.as_int(data.get("bill_total_amount"))
            outstanding = m.as_int(data.get("bill_outstanding_amount"))
            if bill_id and total is not None and outstanding is not None:
                self._bills[bill_id] = (total, outstanding)
        waiter = self._waiters.pop(event.request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    # ------------------------------------------------------------------ the waiter's actions

    async def exchange(self, request: m.TerminalPayAtTableRequest, patience: float) -> Exchange:
        """Send ``request`` and wait for its reply; :class:`NoReply` after ``patience`` seconds."""
        terminal = self._terminal
        sent: list[str] = []
        terminal.act(lambda now: sent.append(terminal.session.send_pay_at_table(request, now)))
        request_id = sent[0]
        # No reply can arrive before this line: frames go out through the writer task.
        waiter: asyncio.Future[PayAtTableAnswered] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            async with asyncio.timeout(patience):
                reply = await waiter
        except TimeoutError:
            self._waiters.pop(request_id, None)
            terminal.session.abandon_pay_at_table(request_id)
            terminal.log.info("pat.no_reply", request=str(request.event), request_id=request_id)
            raise NoReply(request_id, request, patience) from None
        finally:
            self._waiters.pop(request_id, None)
        return Exchange(request_id=request_id, request=request, reply=reply)

    async def pay(
        self,
        *,
        bill_id: str,
        table_id: str,
        operator_id: str,
        payment_type: str,
        amount: int,
        tip: int,
        repeat: bool,
        patience: float,
    ) -> Payment:
        """Take one payment of a bill and report it (``bill_payment``), or repeat the last one."""
        if repeat:
            request = self.last_payment
            if request is None:
                raise LocalProtocolError("no bill payment to repeat")
        else:
            details = self._take(payment_type, amount, tip)
            if details.get("success") is False:
                return Payment(details=details, exchange=None)
            request = m.BillPaymentRequest(
                bill_id=bill_id,
                operator_id=operator_id,
                payment_type=payment_type,
                table_id=table_id,
                payment_details=details,
            )
            self.last_payment = request
            self._count(request)
        return Payment(
            details=request.payment_details, exchange=await self.exchange(request, patience)
        )

    async def end(
        self, *, bill_id: str, table_id: str, operator_id: str, patience: float
    ) -> Exchange:
        """Report the end of this bill's payment flow with its totals; wait for the ack."""
        totals = self._flows.get(bill_id, _FlowTotals())
        total, outstanding = self._bills.get(bill_id, (0, 0))
        request = m.BillPaymentFlowEndedRequest(
            bill_id=bill_id,
            bill_outstanding_amount=outstanding,
            bill_total_amount=total,
            operator_id=operator_id,
            table_id=table_id,
            card_total_count=totals.card_count,
            card_total_amount=totals.card_amount,
            cash_total_count=totals.cash_count,
            cash_total_amount=totals.cash_amount,
        )
        done = await self.exchange(request, patience)
        self._flows.pop(bill_id, None)  # kept on NoReply: a retry reports the same totals
        return done

    async def session(
        self, *, table_id: str, operator_id: str, payments: list[JsonObject], patience: float
    ) -> list[JsonObject]:
        """A whole visit: the bill, each payment, the end; every step's result in order.

        Stops after a failed ``bill_details`` (the POS's error is the last result).
        """
        steps: list[JsonObject] = []
        try:
            bill = await self.exchange(
                m.GetBillDetailsRequest(
                    table_id=table_id, operator_id=operator_id, payment_flow_started=True
                ),
                patience,
            )
            steps.append(bill.to_json())
            if bill.reply.data.get("success") is not True:
                return steps
            bill_id = m.as_str(bill.reply.data.get("bill_id")) or ""
            for item in payments:
                payment = await self.pay(
                    bill_id=bill_id,
                    table_id=table_id,
                    operator_id=operator_id,
                    payment_type=str(item["payment_type"]),
                    amount=int(item["amount_cents"]),
                    tip=int(item.get("tip_cents", 0)),
                    repeat=False,
                    patience=patience,
                )
                steps.append(payment.to_json())
            end = await self.end(
                bill_id=bill_id, table_id=table_id, operator_id=operator_id, patience=patience
            )
            steps.append(end.to_json())
        except NoReply as exc:
            exc.done = steps
            raise
        return steps

    # ------------------------------------------------------------------ the bank

    def _take(self, payment_type: str, amount: int, tip: int) -> JsonObject:
        terminal = self._terminal
        session = terminal.session
        outcome = Outcome.approve()
        if payment_type == "card":
            behaviour = terminal.behaviour_for(amount)
            if behaviour is Behaviour.DECLINE:
                outcome = Outcome.decline()
            elif behaviour is Behaviour.PARTIAL:
                outcome = Outcome.partial(max(1, amount // 2))
        bank = Bank(session.state, session.profile, session.options)
        details = bank.bill_payment_details(payment_type, amount, tip, outcome, time.time())
        terminal.persist()  # the bank moved the STAN sequence and the settlement batch
        return details

    def _count(self, request: m.BillPaymentRequest) -> None:
        # Counted once, when taken: a repeat reports the same payment again.
        totals = self._flows.setdefault(request.bill_id, _FlowTotals())
        amount = m.as_int(request.payment_details.get("purchase_amount")) or 0
        if request.payment_type == "card":
            totals.card_count += 1
            totals.card_amount += amount
        else:
            totals.cash_count += 1
            totals.cash_amount += amount
