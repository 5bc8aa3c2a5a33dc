"""Commands of the preauthorisation family, account verification and Zip (PROTOCOL.md §7.16, §7.17).

Each is a transaction with purchase-like guarantees: the record is written
before the request is sent, a repeat is answered from it, and an outcome lost
to a crash or a drop is recovered with ``get_transaction``, never re-sent.
The lane keeps nothing about a preauthorisation beyond these records: the
terminal and its acquirer are the source of truth for its balance. The rules
of :mod:`multipair.broker_schema.commands` apply; this module adds its fields'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

from multipair.broker_schema.commands import (
    Command,
    CommandKind,
    add_rules,
    printable,
    register,
)

__all__ = [
    "AccountVerify",
    "PreauthCancel",
    "PreauthComplete",
    "PreauthExtend",
    "PreauthOpen",
    "PreauthPartialCancel",
    "PreauthTopup",
    "ZipPurchase",
    "ZipRefund",
]

_PREAUTH_ID: Final = re.compile(r"[!-~]{1,32}")
"""1-32 printable ASCII characters, no spaces: the id the terminal gave when it opened."""


def _preauth_id(name: str, value: str) -> str | None:
    if not _PREAUTH_ID.fullmatch(value):
        return f"{name} must be 1-32 printable ASCII characters without spaces, got {value[:40]!r}"
    return None


add_rules(
    {
        "preauth_id": (None, _preauth_id),
        "store_code": (None, printable(1, 64)),
        "description": (None, printable(0, 256)),
        "original_receipt_number": (None, printable(1, 64)),
    }
)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class AccountVerify(Command):
    """Check that a card is valid without moving money (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "account_verify"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthOpen(Command):
    """Open a preauthorisation; the terminal names it (``preauth_id``) in the outcome (§7.16)."""

    type: ClassVar[str] = "preauth_open"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    """The amount to hold, > 0 (``preauth_amount``)."""


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthTopup(Command):
    """Raise an open preauthorisation (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_topup"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""
    amount_cents: int
    """The amount to add, > 0 (``topup_amount``)."""


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthPartialCancel(Command):
    """Lower an open preauthorisation (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_partial_cancel"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""
    amount_cents: int
    """The amount to release, > 0 (``preauth_cancel_amount``)."""


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthExtend(Command):
    """Extend the life of an open preauthorisation (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_extend"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthCancel(Command):
    """Release an open preauthorisation entirely (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_cancel"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthComplete(Command):
    """Capture an amount of an open preauthorisation, closing it (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_complete"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""
    amount_cents: int
    """The amount to capture, > 0 (``completion_amount``)."""
    surcharge_cents: int = 0


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ZipPurchase(Command):
    """A Zip (buy now, pay later) purchase (PROTOCOL.md §7.17)."""

    type: ClassVar[str] = "zip_purchase"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    """The purchase amount, > 0."""
    store_code: str
    """The merchant's Zip store code, 1-64 printable characters."""
    description: str = ""
    """What was bought (the request's ``basket``), 0-256 printable characters."""


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ZipRefund(Command):
    """Refund a Zip purchase (PROTOCOL.md §7.17)."""

    type: ClassVar[str] = "zip_refund"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    """The refund amount, > 0."""
    original_receipt_number: str
    """The Zip receipt number of the purchase (its outcome's ``zip_data.receipt_number``)."""
