"""How a simulated terminal decides a transaction: the one table tests and demos rely on.

The outcome of a transaction is chosen by the **cents of its main amount**
(``purchase_amount``, ``refund_amount``, ``cash_amount``, ``preauth_amount``,
``topup_amount`` …; requests without an amount, such as settlement, count
as ``.00``). The control API can override it per terminal, once or until
cleared (``POST /terminals/<serial>/outcome``).

=====  ====================  ===================================================
cents  outcome name          what the terminal does
=====  ====================  ===================================================
51     ``decline``           declined by the bank: ``51 DECLINED``
52     ``signature``         asks the POS to check a signature; accepted →
                             approved, declined → ``512 SIGNATURE DECLINED``
53     ``auth_code``         asks the POS for a phone authorisation code, then
                             approves with that code
54     ``slow_card``         slow card: ``txn_update_message`` progress over
                             about 3 s (cancellable meanwhile), then approved
55     ``no_answer``         never answers; the transaction stays in progress
                             until the POS cancels it
56     ``partial``           partial approval of half the amount: ``002 APPROVED``
57     ``past_no_return``    past the point of no return at once, approved after
                             about 3 s: a cancel gets ``TXN_PAST_POINT_OF_NO_RETURN``
58     ``drop_before_send``  approved, but the connection drops after the
                             result is produced and before it is sent; the POS
                             must recover it with ``get_transaction``
59     ``drop_after_request`` the connection drops right after the request
                             arrives; the terminal still approves it internally
other  ``approve``           approved: ``000 APPROVED``
=====  ====================  ===================================================

A cancel before the point of no return (during a card delay, a slow card, an
auth-code wait, or ``no_answer``) succeeds and the transaction ends with
``511 TRANS CANCELLED``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "OUTCOME_RULES",
    "RULES_HELP",
    "Behaviour",
    "DropStep",
    "PairingMode",
    "behaviour_for_amount",
    "parse_pairing_mode",
]


class Behaviour(StrEnum):
    """What the simulated customer and bank do with one transaction."""

    APPROVE = "approve"
    DECLINE = "decline"
    SIGNATURE = "signature"
    AUTH_CODE = "auth_code"
    SLOW_CARD = "slow_card"
    NO_ANSWER = "no_answer"
    PARTIAL = "partial"
    PAST_NO_RETURN = "past_no_return"
    DROP_BEFORE_SEND = "drop_before_send"
    DROP_AFTER_REQUEST = "drop_after_request"


OUTCOME_RULES: Final[dict[int, Behaviour]] = {
    51: Behaviour.DECLINE,
    52: Behaviour.SIGNATURE,
    53: Behaviour.AUTH_CODE,
    54: Behaviour.SLOW_CARD,
    55: Behaviour.NO_ANSWER,
    56: Behaviour.PARTIAL,
    57: Behaviour.PAST_NO_RETURN,
    58: Behaviour.DROP_BEFORE_SEND,
    59: Behaviour.DROP_AFTER_REQUEST,
}
"""Cents of the main amount -> behaviour; every other value approves."""


def behaviour_for_amount(amount_cents: int) -> Behaviour:
    """The behaviour the table above gives an amount."""
    return OUTCOME_RULES.get(abs(amount_cents) % 100, Behaviour.APPROVE)


class DropStep(StrEnum):
    """Named points of a transaction where the control API can drop the POS connection."""

    AFTER_REQUEST_RECEIVED = "after_request_received"
    AFTER_RESULT_BEFORE_SEND = "after_result_before_send"
    WHILE_AWAITING_SIGNATURE = "while_awaiting_signature"


class PairingMode(StrEnum):
    """Who presses YES on the terminal when a pairing code shows."""

    AUTO = "auto"  # at once
    DELAY = "delay"  # after a delay
    MANUAL = "manual"  # only through the control API


def parse_pairing_mode(text: str) -> tuple[PairingMode, float]:
    """``auto`` | ``manual`` | ``delay:SECONDS`` -> (mode, seconds); ValueError otherwise."""
    if text == PairingMode.AUTO:
        return PairingMode.AUTO, 0.0
    if text == PairingMode.MANUAL:
        return PairingMode.MANUAL, 0.0
    kind, sep, seconds = text.partition(":")
    if kind == PairingMode.DELAY and sep:
        value = float(seconds)
        if value >= 0:
            return PairingMode.DELAY, value
    raise ValueError(f"pairing mode must be auto, manual or delay:SECONDS, not {text!r}")


def _help_table() -> str:
    names = {
        Behaviour.DECLINE: "declined, 51 DECLINED",
        Behaviour.SIGNATURE: "signature required (accept -> approved, decline -> declined)",
        Behaviour.AUTH_CODE: "phone auth code required, then approved with that code",
        Behaviour.SLOW_CARD: "slow card: progress messages for ~3 s, then approved",
        Behaviour.NO_ANSWER: "terminal never answers (until the POS cancels)",
        Behaviour.PARTIAL: "partial approval of half the amount (002)",
        Behaviour.PAST_NO_RETURN: "past the point of no return at once (cancel fails), ~3 s",
        Behaviour.DROP_BEFORE_SEND: "connection dropped after the result, before it is sent",
        Behaviour.DROP_AFTER_REQUEST: "connection dropped after the request; approved inside",
    }
    lines = ["outcome by the cents of the amount:"]
    for cents, behaviour in OUTCOME_RULES.items():
        lines.append(f"  .{cents:02d}  {behaviour.value:<19} {names[behaviour]}")
    lines.append(f"  other {Behaviour.APPROVE.value:<19} approved, 000 APPROVED")
    return "\n".join(lines)


RULES_HELP: Final = _help_table()
"""The table in the short form ``multipair simulate --help`` prints."""
