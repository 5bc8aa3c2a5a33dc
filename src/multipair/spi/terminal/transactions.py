"""A transaction as the terminal runs it, and the interface to the bank that answers it.

Rules (PROTOCOL.md §7.1):

- A transaction request is read with the message catalogue (the request
  class :func:`multipair.spi.messages.parse_request` would use): lenient about
  representation, strict about substance. :func:`vet_request` decides, with
  no I/O, whether it runs or is refused at once, in this order: busy
  (``OPERATION_IN_PROGRESS``), no ``pos_ref_id`` where one is required
  (``MISSING_ARGUMENTS``), data the catalogue cannot read
  (``INVALID_ARGUMENTS``).
- The session decides *when* to answer; a :class:`Responder` (the bank)
  decides *what* the answer says, from an :class:`Outcome` the caller chose.
  The session never approves or declines on its own, except where the
  protocol leaves no choice (busy, cancel, lookups).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from multipair.exceptions import LocalProtocolError, RemoteProtocolError
from multipair.spi import messages as m
from multipair.spi.envelope import JsonObject, Message
from multipair.spi.terminal.state import TerminalOptions, TerminalProfile, TerminalState

__all__ = [
    "BUSY_DETAIL",
    "HOST_DETAIL",
    "TRANSACTION_EVENTS",
    "Outcome",
    "ReceivedTransaction",
    "Refusal",
    "Responder",
    "ResponderFactory",
    "vet_request",
]

BUSY_DETAIL: Final = "Payment interface is busy, cannot process operation at this time"
HOST_DETAIL: Final = "see 'host_response_text' for details"
"""The ``error_detail`` of a host decline (the bank's text is in ``host_response_text``)."""

_LOOKUPS: Final = frozenset({m.Event.GET_TRANSACTION, m.Event.GET_LAST_TRANSACTION})

TRANSACTION_EVENTS: Final = frozenset(
    str(cls.event) for cls in m.TRANSACTION_REQUESTS.values() if cls.event not in _LOOKUPS
)
"""POS events that start a transaction (§7.2-7.17); the lookups are answered at once."""

_NO_POS_REF_ID: Final = frozenset({str(m.Event.SETTLE), str(m.Event.SETTLEMENT_ENQUIRY)})
"""Settlement carries no ``pos_ref_id`` (§7.14); every other transaction needs one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How the bank (the caller) decides the current transaction."""

    approved: bool
    host_response_code: str = "000"
    host_response_text: str = "APPROVED"
    error_reason: str | None = None
    error_detail: str | None = None
    partial_amount: int | None = None
    """Approved amount in cents when less than requested (partial approval)."""
    auth_code: str | None = None
    """Authorisation code to report instead of a generated one (phone auth)."""

    @classmethod
    def approve(cls, *, auth_code: str | None = None) -> Outcome:
        """``000 APPROVED``."""
        return cls(approved=True, auth_code=auth_code)

    @classmethod
    def decline(cls, code: str = "51", text: str = "DECLINED") -> Outcome:
        """A host decline, e.g. ``51 DECLINED`` (insufficient funds)."""
        return cls(
            approved=False,
            host_response_code=code,
            host_response_text=text,
            error_reason="HOST_DECLINED",
            error_detail=HOST_DETAIL,
        )

    @classmethod
    def partial(cls, amount_cents: int) -> Outcome:
        """Partial approval: ``002 APPROVED`` for ``amount_cents``."""
        return cls(approved=True, host_response_code="002", partial_amount=amount_cents)

    @classmethod
    def cancelled(cls) -> Outcome:
        """The customer or the POS cancelled: ``511 TRANS CANCELLED`` (§7.1)."""
        return cls(
            approved=False,
            host_response_code="511",
            host_response_text="TRANS CANCELLED",
            error_reason="TXN_CANCELLED",
            error_detail=HOST_DETAIL,
        )

    @classmethod
    def signature_declined(cls) -> Outcome:
        """The merchant declined the customer's signature."""
        return cls(
            approved=False,
            host_response_code="512",
            host_response_text="SIGNATURE DECLINED",
            error_reason="SIGNATURE_DECLINED",
            error_detail=HOST_DETAIL,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedTransaction:
    """A transaction request as the terminal received it (§7): the catalogue's reading of
    its data, the id the response must echo (§2.5) and when it arrived."""

    request: m.TransactionRequest
    message_id: str
    received_at: float

    @property
    def event(self) -> str:
        """The request's event name, e.g. ``purchase``."""
        return str(self.request.event)

    @property
    def response_event(self) -> str:
        """The event name of the answer, e.g. ``purchase_response``."""
        return str(self.request.response_event)

    @property
    def pos_ref_id(self) -> str | None:
        """The POS's reference; None for settlement, which sends none (§7.14)."""
        return self.request.pos_ref_id or None


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A transaction request answered at once with a failure (§7.1)."""

    response_event: str
    error_reason: str
    error_detail: str
    pos_ref_id: str | None
    """The ``pos_ref_id`` as sent, echoed when there was one (§13.9)."""

    def data(self) -> JsonObject:
        """The failed response's ``data``."""
        data: JsonObject = {
            "success": False,
            "error_reason": self.error_reason,
            "error_detail": self.error_detail,
        }
        if self.pos_ref_id is not None:
            data = {"pos_ref_id": self.pos_ref_id, **data}
        return data


def vet_request(message: Message, now: float, *, busy: bool) -> ReceivedTransaction | Refusal:
    """Read a transaction request (``message.event`` in :data:`TRANSACTION_EVENTS`) or refuse it."""
    cls = m.REQUEST_CLASSES_BY_EVENT.get(message.event)
    if cls is None or not issubclass(cls, m.TransactionRequest):
        raise LocalProtocolError(f"{message.event!r} is not a transaction request")
    data = message.data if message.data is not None else {}
    refusal = functools.partial(
        Refusal, response_event=str(cls.response_event), pos_ref_id=m.as_str(data.get("pos_ref_id"))
    )
    if busy:
        return refusal(error_reason="OPERATION_IN_PROGRESS", error_detail=BUSY_DETAIL)
    if message.event not in _NO_POS_REF_ID and not m.as_str(data.get("pos_ref_id")):
        return refusal(error_reason="MISSING_ARGUMENTS", error_detail="PosRefId is missing")
    try:
        request = cls.from_data(message.data)
    except RemoteProtocolError as exc:
        return refusal(error_reason="INVALID_ARGUMENTS", error_detail=str(exc))
    return ReceivedTransaction(request=request, message_id=message.id, received_at=now)


class Responder(Protocol):
    """The bank behind the terminal: what a transaction's answer says (§7.1, §7.14-7.17).

    It may keep bank-side memory (STANs, preauth balances, the settlement
    batch) in the :class:`TerminalState` it was built with.
    """

    def response_data(self, tx: ReceivedTransaction, outcome: Outcome, now: float) -> JsonObject:
        """The complete response ``data`` for ``tx`` finished with ``outcome``."""
        ...

    def signature_receipt(self, tx: ReceivedTransaction) -> str:
        """The merchant receipt sent with ``signature_required`` (§7.7)."""
        ...


ResponderFactory: TypeAlias = Callable[[TerminalState, TerminalProfile, TerminalOptions], Responder]
"""Builds a terminal's responder from its state, profile and options
(the simulator's ``multipair.simulator.bank.Bank`` class is one)."""
