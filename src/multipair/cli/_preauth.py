"""``multipair tx preauth ...``, ``tx account-verify``, ``tx zip-purchase|zip-refund``.

The parsers and what their commands carry; they run exactly as ``tx
purchase`` does (:mod:`multipair.cli._tx` sends, shows progress, prints the
outcome; exit 0 approved, 1 declined, 2 refused, 3 unknown). Rules:

- Every step after ``open`` names the preauthorisation (``--preauth-id``,
  required: the contract refuses a step without it). The lane keeps nothing
  about a preauthorisation beyond its records; the id is the operator's
  (or the POS backend's) to keep, and ``open`` prints it.
- Each step is a transaction of its own, with its own ``pos_ref_id``
  (default: a new one, as for a purchase).
- The outcome adds the preauthorisation's id and balance before and after
  (PROTOCOL.md §7.16 table), or Zip's receipt number (§7.17):
  :func:`outcome_rows`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from multipair import broker_schema as bs
from multipair.cli._base import Parser, Subparsers
from multipair.cli.amounts import AmountError, format_cents, parse_amount

__all__ = ["Build", "MoneyParser", "add_preauth_actions", "describe", "outcome_rows"]

Build: TypeAlias = Callable[[argparse.Namespace], tuple[type[bs.Command], dict[str, Any]]]
"""What a money action sends: the command class and its fields, from the parsed arguments."""


class MoneyParser(Protocol):
    """``tx``'s maker of a money action: the lane, ``--amount`` (unless ``amount=False``),
    ``--pos-ref-id``, ``--timeout``, ``--receipt``, and the handler that runs ``build``."""

    def __call__(
        self, actions: Subparsers, name: str, text: str, build: Build, /, *, amount: bool = True
    ) -> Parser: ...


def _amount_or_zero(text: str) -> int:
    try:
        return parse_amount(text, allow_zero=True)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _preauth_id(parser: Parser) -> None:
    parser.add_argument(
        "--preauth-id",
        required=True,
        metavar="PREAUTH_ID",
        help="the id the terminal gave when the preauthorisation was opened",
    )


def add_preauth_actions(actions: Subparsers, money: MoneyParser) -> None:
    """Register ``tx preauth open|topup|partial-cancel|extend|cancel|complete``,
    ``tx account-verify`` and ``tx zip-purchase|zip-refund`` under ``tx``'s ``actions``."""
    money(
        actions,
        "account-verify",
        "account verify: check a card, moving no money",
        lambda a: (bs.AccountVerify, {}),
        amount=False,
    )

    preauth = actions.add_parser(
        "preauth",
        help="preauthorisation: open, topup, partial-cancel, extend, cancel, complete",
        description=(
            "Preauthorisations (hotels, car hire): hold an amount on a card, change it, and "
            "complete or cancel it. `open` prints the preauth id; every later step needs it "
            "(--preauth-id). Each step is a transaction with its own pos_ref_id. Exit codes "
            "as for `tx purchase`: 0 approved, 1 declined, 2 refused, 3 unknown."
        ),
    )
    steps = preauth.add_subparsers(dest="step", metavar="STEP", required=True)
    money(
        steps,
        "open",
        "open a preauthorisation: hold --amount on a card",
        lambda a: (bs.PreauthOpen, {"amount_cents": a.amount}),
    )
    _preauth_id(
        money(
            steps,
            "topup",
            "raise an open preauthorisation by --amount",
            lambda a: (bs.PreauthTopup, {"preauth_id": a.preauth_id, "amount_cents": a.amount}),
        )
    )
    _preauth_id(
        money(
            steps,
            "partial-cancel",
            "release --amount of an open preauthorisation",
            lambda a: (
                bs.PreauthPartialCancel,
                {"preauth_id": a.preauth_id, "amount_cents": a.amount},
            ),
        )
    )
    _preauth_id(
        money(
            steps,
            "extend",
            "extend the life of an open preauthorisation",
            lambda a: (bs.PreauthExtend, {"preauth_id": a.preauth_id}),
            amount=False,
        )
    )
    _preauth_id(
        money(
            steps,
            "cancel",
            "cancel an open preauthorisation: release all of it",
            lambda a: (bs.PreauthCancel, {"preauth_id": a.preauth_id}),
            amount=False,
        )
    )
    complete = money(
        steps,
        "complete",
        "complete a preauthorisation: charge --amount of it and close it",
        lambda a: (
            bs.PreauthComplete,
            {"preauth_id": a.preauth_id, "amount_cents": a.amount, "surcharge_cents": a.surcharge},
        ),
    )
    _preauth_id(complete)
    complete.add_argument("--surcharge", type=_amount_or_zero, default=0, metavar="DOLLARS")

    zip_purchase = money(
        actions,
        "zip-purchase",
        "Zip (buy now, pay later) purchase",
        lambda a: (
            bs.ZipPurchase,
            {"amount_cents": a.amount, "store_code": a.store_code, "description": a.description},
        ),
    )
    zip_purchase.add_argument(
        "--store-code", required=True, metavar="CODE", help="the merchant's Zip store code"
    )
    zip_purchase.add_argument(
        "--description", default="", metavar="TEXT", help="what was bought (the basket)"
    )
    zip_refund = money(
        actions,
        "zip-refund",
        "refund a Zip purchase",
        lambda a: (
            bs.ZipRefund,
            {"amount_cents": a.amount, "original_receipt_number": a.original_receipt_number},
        ),
    )
    zip_refund.add_argument(
        "--original-receipt-number",
        required=True,
        metavar="NUMBER",
        help="the Zip receipt number of the purchase (its outcome's zip_data.receipt_number)",
    )


_EXTRAS = (
    ("preauth_id", "preauth", str),
    ("tip_cents", "tip", format_cents),
    ("cashout_cents", "cash out", format_cents),
    ("surcharge_cents", "surcharge", format_cents),
    ("store_code", "store", str),
    ("original_receipt_number", "original receipt", str),
)


def describe(fields: dict[str, Any]) -> str:
    """What a money command carries, for people: ``" $90.00 (preauth 15765001, surcharge
    $1.00)"`` (pure; empty for a command without amount or extras)."""
    text = f" {format_cents(fields['amount_cents'])}" if "amount_cents" in fields else ""
    extras = [f"{label} {show(fields[name])}" for name, label, show in _EXTRAS if fields.get(name)]
    return text + (f" ({', '.join(extras)})" if extras else "")


_TERMINAL_TYPE_SHOWN = frozenset(
    {
        "account_verify",
        "preauth_open",
        "preauth_topup",
        "preauth_partial_cancel",
        "preauth_extend",
        "preauth_cancel",
        "preauth_complete",
    }
)


def outcome_rows(event: bs.TransactionCompleted | bs.TransactionLookup) -> list[tuple[str, str]]:
    """The preauthorisation's and Zip's lines of an outcome (pure): id, the terminal's name
    for the step, the balance before → after, Zip's receipt."""
    rows: list[tuple[str, str]] = []
    if event.preauth_id:
        rows.append(("preauth id", event.preauth_id))
    if event.transaction_type and event.tx_type in _TERMINAL_TYPE_SHOWN:
        rows.append(("terminal type", event.transaction_type))
    before, after = event.balance_before_cents, event.balance_after_cents
    if before is not None or after is not None:
        shown = [format_cents(x) if x is not None else "?" for x in (before, after)]
        rows.append(("balance", f"{shown[0]} → {shown[1]}"))
    zip_data = event.zip_data or {}
    parts = [
        f"{label} {zip_data[key]}"
        for key, label in (
            ("receipt_number", "receipt"),
            ("location_id", "location"),
            ("store_code", "store"),
            ("original_receipt_number", "original receipt"),
        )
        if zip_data.get(key) not in (None, "")
    ]
    if parts:
        rows.append(("zip", ", ".join(parts)))
    return rows
