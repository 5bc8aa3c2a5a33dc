"""The transaction machine and what binds a terminal's answer to it (PROTOCOL.md §7, §8.3).

:class:`Transaction` is the session's one running transaction: its phase
moves along :data:`multipair.spi.states.TX_MOVES` (an illegal move raises
:class:`~multipair.exceptions.LocalProtocolError`), beside the §8.3 fields
the monitor and recovery need. The functions here are the pure parts of
reading an answer: whether a ``get_transaction`` answer names the
transaction, and what a response's ``success`` means. The session
(:mod:`multipair.spi.pos.session`) does the sending and emits the events.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from multipair.exceptions import LocalProtocolError
from multipair.spi import messages as m
from multipair.spi.common import PRINTERLESS_MODELS
from multipair.spi.states import TX_MOVES, Outcome, TxPhase

__all__ = [
    "GT_DEFINITELY_FAILED",
    "GT_KEEP_WAITING",
    "NO_POS_REF_ID_TYPES",
    "PRINTERLESS_MODELS",
    "Transaction",
    "answer_names",
    "describe",
    "outcome_of",
    "without_printing",
]

GT_KEEP_WAITING: Final = ("TRANSACTION_IN_PROGRESS", "OPERATION_IN_PROGRESS")
"""``get_transaction`` error prefixes that mean "still running": keep waiting (§7.10 R4, R8)."""
GT_DEFINITELY_FAILED: Final = frozenset(
    {"POS_REF_ID_NOT_FOUND", "INVALID_ARGUMENTS", "MISSING_ARGUMENTS"}
)
"""``get_transaction`` errors that mean the terminal never ran it (§7.10 R5–R7)."""
NO_POS_REF_ID_TYPES: Final = frozenset(
    {m.TxType.SETTLE, m.TxType.SETTLEMENT_ENQUIRY, m.TxType.GET_LAST_TRANSACTION}
)
"""Types whose responses carry no ``pos_ref_id`` (§7.14): ``get_transaction`` cannot find them."""


@dataclass(slots=True)
class Transaction:
    """The running transaction: its phase and the §8.3 fields the session keeps for it."""

    pos_ref_id: str
    tx_type: m.TxType
    response_event: str
    request: m.TransactionRequest | None
    phase: TxPhase = TxPhase.REQUESTED
    request_id: str = ""
    started_at: float = 0.0
    last_state_request_at: float = 0.0
    recovering: bool = False
    cancelling: bool = False
    cancel_at: float = 0.0
    last_gt_response_at: float | None = None
    gt_request_id: str | None = None
    monitor_anchor: float = 0.0
    signature_from_gt: bool = False

    def move(self, target: TxPhase) -> None:
        if target not in TX_MOVES[self.phase]:
            raise LocalProtocolError(f"transaction cannot move from {self.phase} to {target}")
        self.phase = target


def answer_names(parsed: m.GetTransactionResponse, pos_ref_id: str) -> bool:
    """Whether a get_transaction answer is about ``pos_ref_id`` and nothing else.

    Real answers carry it outside (errors) or inside ``tx`` (successes) or
    both (§7.10 fixtures); one that names no transaction, or another one
    anywhere, does not count.
    """
    named = [parsed.pos_ref_id, parsed.tx.pos_ref_id if parsed.tx is not None else None]
    given = [value for value in named if value is not None]
    return bool(given) and all(value == pos_ref_id for value in given)


def outcome_of(success: bool | None) -> Outcome:
    """What a response's ``success`` says about the money (§7.1 SuccessState)."""
    if success is True:
        return Outcome.SUCCESS
    if success is False:
        return Outcome.FAILED
    return Outcome.UNKNOWN


def describe(parsed: m.TransactionResponse | m.SettlementResponse, outcome: Outcome) -> str:
    """The operator's one line about a response: the host's text, else the error."""
    text = parsed.host_response_text or ""
    if outcome is Outcome.FAILED and isinstance(parsed, m.TransactionResponse):
        text = text or parsed.error_detail or parsed.error_reason or ""
    return text or str(outcome)


def without_printing(request: m.TransactionRequest) -> m.TransactionRequest:
    """Drop receipt options and print flags for a terminal without a printer (§7.1)."""
    changes: dict[str, object] = {}
    if hasattr(request, "options"):
        changes["options"] = m.ReceiptOptions()
    if hasattr(request, "config"):
        changes["config"] = m.PrintingConfig()
    return dataclasses.replace(request, **changes) if changes else request  # type: ignore[type-var]
