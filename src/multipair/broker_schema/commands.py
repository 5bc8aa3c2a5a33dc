"""Commands a POS backend sends to a lane (docs/broker-schema.md, "Commands").

Rules this module keeps:

- One frozen, slotted, keyword-only dataclass per command ``type``. The
  schema grows only by fields with defaults; a field never changes type.
- A field name means one thing in every command, checked by one rule in
  ``_RULES`` (``amount_cents`` is always the main amount and always > 0).
  Registering a command with a field that has no rule fails at import.
- Building a command validates it, whether it came from JSON or from Python:
  ``CommandError('wrong_type' | 'invalid_value', detail)`` names the field.
- Money is integer cents: a ``bool`` is not an ``int`` and a ``float`` is
  refused even when integral (``12.0``), because a JSON number with a point
  is a sign the sender computed money in floating point.
- ``expires_at`` is an ISO-8601 time with an explicit offset (``Z`` or
  ``+10:00``), held in UTC; a command is expired *at* that instant and after.
- Each command is either a ``transaction`` (runs one at a time per lane, in
  stream order, because it needs the lane's SPI flow to be idle or must keep
  its order with the ones that do) or ``control`` (acts at once, also while a
  transaction runs). DESIGN.md "Guarantees", "Order".
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final, TypeVar

from multipair.broker_schema._fields import (
    FieldSpec,
    JsonObject,
    check_kind,
    field_specs,
    format_time,
    is_valid_pos_ref_id,
    to_utc,
)
from multipair.broker_schema.reasons import Reason
from multipair.exceptions import CommandError, InternalError

__all__ = [
    "BILL_ERRORS",
    "COMMAND_TYPES",
    "MAX_CENTS",
    "AccountVerify",
    "AuthCode",
    "BillDetails",
    "Cancel",
    "Cashout",
    "Command",
    "CommandKind",
    "GetLastTransaction",
    "GetTransaction",
    "MotoPurchase",
    "OpenTables",
    "Pair",
    "PairCancel",
    "PairConfirm",
    "PreauthCancel",
    "PreauthComplete",
    "PreauthExtend",
    "PreauthOpen",
    "PreauthPartialCancel",
    "PreauthTopup",
    "Print",
    "Purchase",
    "Refund",
    "Reversal",
    "SetConfig",
    "SetTableConfig",
    "Settle",
    "SettlementEnquiry",
    "SignatureAccept",
    "SignatureDecline",
    "TerminalConfiguration",
    "TerminalStatus",
    "Unpair",
    "ZipPurchase",
    "ZipRefund",
    "check_table_config_value",
    "is_valid_pos_ref_id",
]

MAX_CENTS: Final = 999_999_999
"""The largest amount a command may carry: nine digits of cents ($9,999,999.99)."""

_MAX_COMMAND_ID_CHARS: Final = 128
_MAX_PRINT_KEY_CHARS: Final = 128
_AUTH_CODE = re.compile(r"[A-Za-z0-9]{6}")
_CONFIRMATION_CODE = re.compile(r"[0-9A-Fa-f]{6}")
_PREAUTH_ID = re.compile(r"[!-~]{1,32}")
"""1-32 printable ASCII characters, no spaces: the id the terminal gave when it opened."""
_MAX_PAT_TEXT: Final = 64
_MAX_OPERATOR_IDS: Final = 100
_MAX_OPERATOR_ID_CHARS: Final = 32
_MIN_ANSWER_MS: Final = 1_000
_MAX_ANSWER_MS: Final = 60_000
_MAX_TABLES: Final = 1_000

BILL_ERRORS: Final = ("INVALID_TABLE_ID", "INVALID_BILL_ID", "INVALID_OPERATOR_ID")
"""The errors a ``bill_details`` command may send instead of a bill (PROTOCOL.md §7.23)."""


class CommandKind(StrEnum):
    """How a lane schedules a command."""

    TRANSACTION = "transaction"
    """One at a time per lane, in stream order (DESIGN.md "Order")."""
    CONTROL = "control"
    """At once, also while a transaction runs."""


# --- field rules: name -> (what the wrong type is told it must be, value check) ----------

_Check = Callable[[str, Any], "str | None"]


def _command_id(name: str, value: str) -> str | None:
    if not 1 <= len(value) <= _MAX_COMMAND_ID_CHARS or not value.isprintable():
        return f"{name} must be 1-{_MAX_COMMAND_ID_CHARS} printable characters, got {value[:40]!r}"
    return None


def _pos_ref_id(name: str, value: str) -> str | None:
    if not is_valid_pos_ref_id(value):
        return f"{name} must be 1-64 ASCII letters, digits or '-_:.', got {value[:70]!r}"
    return None


def _main_cents(name: str, value: int) -> str | None:
    if not 0 < value <= MAX_CENTS:
        return f"{name} must be from 1 to {MAX_CENTS} cents, got {value}"
    return None


def _extra_cents(name: str, value: int) -> str | None:
    if not 0 <= value <= MAX_CENTS:
        return f"{name} must be from 0 to {MAX_CENTS} cents, got {value}"
    return None


def _auth_code(name: str, value: str) -> str | None:
    if not _AUTH_CODE.fullmatch(value):
        return f"{name} must be exactly 6 letters or digits (PROTOCOL.md §7.8), got {value[:20]!r}"
    return None


def _confirmation_code(name: str, value: str) -> str | None:
    if not _CONFIRMATION_CODE.fullmatch(value):
        return f"{name} must be the 6 hex digits shown while pairing, got {value[:20]!r}"
    return None


def _print_key(name: str, value: str) -> str | None:
    if not 1 <= len(value) <= _MAX_PRINT_KEY_CHARS or not value.isprintable():
        return f"{name} must be 1-{_MAX_PRINT_KEY_CHARS} printable characters"
    return None


def _preauth_id(name: str, value: str) -> str | None:
    if not _PREAUTH_ID.fullmatch(value):
        return f"{name} must be 1-32 printable ASCII characters without spaces, got {value[:40]!r}"
    return None


def _printable(low: int, high: int) -> _Check:
    def check(name: str, value: str) -> str | None:
        if not low <= len(value) <= high or not value.isprintable():
            return f"{name} must be {low}-{high} printable characters, got {value[:40]!r}"
        return None

    return check


def _non_empty(name: str, value: str) -> str | None:
    return f"{name} must not be empty" if not value else None


def _text(low: int, high: int) -> _Check:
    def check(name: str, value: str) -> str | None:
        if not low <= len(value) <= high or not value.isprintable():
            return f"{name} must be {low}-{high} printable characters, got {value[:40]!r}"
        return None

    return check


def _operator_ids(name: str, value: tuple[str, ...]) -> str | None:
    if len(value) > _MAX_OPERATOR_IDS:
        return f"{name} may hold at most {_MAX_OPERATOR_IDS} operator ids, got {len(value)}"
    for item in value:
        if not 1 <= len(item) <= _MAX_OPERATOR_ID_CHARS or not item.isprintable():
            return (
                f"{name} must hold 1-{_MAX_OPERATOR_ID_CHARS} printable characters each, "
                f"got {item[:40]!r}"
            )
    return None


def _answer_timeout(name: str, value: int) -> str | None:
    if not _MIN_ANSWER_MS <= value <= _MAX_ANSWER_MS:
        return f"{name} must be from {_MIN_ANSWER_MS} to {_MAX_ANSWER_MS} ms, got {value}"
    return None


def _bill_error(name: str, value: str) -> str | None:
    if value not in BILL_ERRORS:
        return f"{name} must be one of {', '.join(BILL_ERRORS)}, got {value[:40]!r}"
    return None


_TABLE_KEYS: Final = ("table_id", "label", "outstanding_cents")


def _tables(name: str, value: tuple[dict[str, Any], ...]) -> str | None:
    if len(value) > _MAX_TABLES:
        return f"{name} may hold at most {_MAX_TABLES} tables, got {len(value)}"
    for index, table in enumerate(value):
        where = f"{name}[{index}]"
        unknown = sorted(key for key in table if key not in _TABLE_KEYS)
        if unknown:
            return f"{where} has no field {unknown[0][:40]!r} (only {', '.join(_TABLE_KEYS)})"
        table_id = table.get("table_id")
        if type(table_id) is not str or not 1 <= len(table_id) <= _MAX_PAT_TEXT:
            return f"{where}.table_id must be 1-{_MAX_PAT_TEXT} printable characters"
        label = table.get("label", "")
        if type(label) is not str or len(label) > _MAX_PAT_TEXT:
            return f"{where}.label must be 0-{_MAX_PAT_TEXT} printable characters"
        if not (table_id + label).isprintable():
            return f"{where}.table_id and label must be printable characters"
        cents = table.get("outstanding_cents", 0)
        if type(cents) is not int or not 0 <= cents <= MAX_CENTS:
            return f"{where}.outstanding_cents must be an integer from 0 to {MAX_CENTS} cents"
    return None


_CENTS = "an integer number of cents"
_RULES: Final[dict[str, tuple[str | None, _Check | None]]] = {
    "command_id": (None, _command_id),
    "expires_at": ('an ISO-8601 time with a UTC offset such as "2025-01-31T09:30:00Z"', None),
    "pos_ref_id": (None, _pos_ref_id),
    "amount_cents": (_CENTS, _main_cents),
    "tip_cents": (_CENTS, _extra_cents),
    "cashout_cents": (_CENTS, _extra_cents),
    "surcharge_cents": (_CENTS, _extra_cents),
    "prompt_for_cashout": (None, None),
    "suppress_merchant_password": (None, None),
    "auth_code": (None, _auth_code),
    "confirmation_code": (None, _confirmation_code),
    "pair_command_id": (None, _command_id),
    "key": (None, _print_key),
    "payload": (None, _non_empty),
    "print_merchant_copy": (None, None),
    "prompt_for_customer_copy": (None, None),
    "signature_flow_on_eftpos": (None, None),
    # preauthorisation and zip
    "preauth_id": (None, _preauth_id),
    "store_code": (None, _printable(1, 64)),
    "description": (None, _printable(0, 256)),
    "original_receipt_number": (None, _printable(1, 64)),
    # pay at table
    "enabled": (None, None),
    "operator_id_enabled": (None, None),
    "split_by_amount_enabled": (None, None),
    "equal_split_enabled": (None, None),
    "tipping_enabled": (None, None),
    "summary_report_enabled": (None, None),
    "table_retrieval_enabled": (None, None),
    "pay_button_label": (None, _text(0, _MAX_PAT_TEXT)),
    "operator_id_label": (None, _text(0, _MAX_PAT_TEXT)),
    "table_id_label": (None, _text(0, _MAX_PAT_TEXT)),
    "operator_ids": (None, _operator_ids),
    "answer_timeout_ms": ("an integer number of milliseconds", _answer_timeout),
    "request_id": (None, _command_id),
    "bill_id": (None, _text(1, _MAX_PAT_TEXT)),
    "table_id": (None, _text(1, _MAX_PAT_TEXT)),
    "total_cents": (_CENTS, _extra_cents),
    "outstanding_cents": (_CENTS, _extra_cents),
    "error": (None, _bill_error),
    "tables": ("a list of {table_id, label, outstanding_cents} objects", _tables),
}


# --- the base class and the registry ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Fields every command has. Use a subclass; ``type`` names it on the wire."""

    type: ClassVar[str]
    """The command's ``type`` on the wire."""
    kind: ClassVar[CommandKind]
    """Whether the lane queues it (``transaction``) or acts at once (``control``)."""
    records_tx: ClassVar[bool] = False
    """True when the lane writes a transaction record keyed by ``pos_ref_id`` before sending it."""
    wire_fields: ClassVar[tuple[FieldSpec, ...]] = ()
    """The fields on the wire, filled in when the class is registered."""

    command_id: str
    """Chosen by the sender, 1-128 printable characters; repeats are answered from the record."""
    expires_at: _dt.datetime | None = None
    """If given, the command is rejected (``expired``) at or after this time instead of run."""

    def __post_init__(self) -> None:
        _validate(self)

    def check_together(self) -> None:
        """Rules that involve more than one field; raise ``CommandError('invalid_value')``."""

    def is_expired(self, now: _dt.datetime) -> bool:
        """True when ``now`` (aware) is at or after ``expires_at``."""
        return self.expires_at is not None and now >= self.expires_at

    def check_not_expired(self, now: _dt.datetime) -> None:
        """Raise ``CommandError('expired')`` when the command must no longer run."""
        if self.expires_at is not None and now >= self.expires_at:
            raise CommandError(
                Reason.EXPIRED,
                f"command {self.command_id!r} expired at {format_time(self.expires_at)}; "
                f"it is now {format_time(now)}",
            )


COMMAND_TYPES: Final[dict[str, type[Command]]] = {}
"""Every command class by its wire ``type``."""

_C = TypeVar("_C", bound=type[Command])


def _register(cls: _C) -> _C:
    specs = field_specs(cls)
    for spec in specs:
        if spec.name not in _RULES:
            raise InternalError(f"{cls.__name__}.{spec.name} has no rule in _RULES")
    cls.wire_fields = specs
    if cls.type in COMMAND_TYPES:
        raise InternalError(f"two commands with type {cls.type!r}")
    COMMAND_TYPES[cls.type] = cls
    return cls


def _validate(command: Command) -> None:
    for spec in type(command).wire_fields:
        value = getattr(command, spec.name)
        wanted, check = _RULES[spec.name]
        check_kind(spec, value, wanted)
        if value is None:
            continue
        if isinstance(value, _dt.datetime):
            object.__setattr__(command, spec.name, to_utc(value, spec.name))
        if check is not None:
            problem = check(spec.name, value)
            if problem is not None:
                raise CommandError(Reason.INVALID_VALUE, problem)
    command.check_together()


# --- pairing ----------------------------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Pair(Command):
    """Start pairing with the terminal named in the lane's profile (PROTOCOL.md §4).

    The confirmation code comes back in a ``pairing`` event; ``pair_confirm``
    completes it. One pairing at a time: a ``pair`` while another is queued
    or running is refused (``busy``). ``expires_at`` bounds the whole
    pairing: a pairing still running then is cancelled by the lane.
    """

    type: ClassVar[str] = "pair"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class PairConfirm(Command):
    """The operator saw the same confirmation code on both screens (PROTOCOL.md §4.4)."""

    type: ClassVar[str] = "pair_confirm"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    confirmation_code: str | None = None
    """If given, the lane confirms only when it equals the code it published."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class PairCancel(Command):
    """Abandon a pairing in progress (PROTOCOL.md §4.5)."""

    type: ClassVar[str] = "pair_cancel"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    pair_command_id: str | None = None
    """If given, cancel only when the running pairing is the one this ``pair`` started."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Unpair(Command):
    """Forget the keys and tell the terminal (``drop_keys``); only when idle (PROTOCOL.md §4.6)."""

    type: ClassVar[str] = "unpair"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION


# --- transactions that move money --------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Purchase(Command):
    """A card purchase, optionally with tip, cashout or surcharge (PROTOCOL.md §7.2)."""

    type: ClassVar[str] = "purchase"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    """The purchase amount, > 0."""
    tip_cents: int = 0
    cashout_cents: int = 0
    surcharge_cents: int = 0
    prompt_for_cashout: bool = False
    """The terminal offers the customer a cashout."""

    def check_together(self) -> None:
        # PROTOCOL.md §7.2: the client refuses a tip together with cashout.
        if self.tip_cents > 0 and (self.cashout_cents > 0 or self.prompt_for_cashout):
            raise CommandError(
                Reason.INVALID_VALUE,
                "tip_cents cannot be combined with cashout_cents or prompt_for_cashout",
            )


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Refund(Command):
    """Refund to a card (PROTOCOL.md §7.3)."""

    type: ClassVar[str] = "refund"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    suppress_merchant_password: bool = False


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Cashout(Command):
    """Cash out only, no purchase (PROTOCOL.md §7.4)."""

    type: ClassVar[str] = "cashout"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    """The cash amount, > 0."""
    surcharge_cents: int = 0


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class MotoPurchase(Command):
    """Mail or telephone order: card details keyed on the terminal (PROTOCOL.md §7.5)."""

    type: ClassVar[str] = "moto_purchase"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    surcharge_cents: int = 0
    suppress_merchant_password: bool = False


# --- acting on the running transaction (control) -----------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(Command):
    """Ask the terminal to cancel the running transaction (PROTOCOL.md §7.6)."""

    type: ClassVar[str] = "cancel"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    pos_ref_id: str | None = None
    """If given, cancel only when the running transaction has this pos_ref_id."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureAccept(Command):
    """The customer's signature matches (PROTOCOL.md §7.7)."""

    type: ClassVar[str] = "signature_accept"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    pos_ref_id: str | None = None
    """If given, act only when the waiting transaction has this pos_ref_id."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureDecline(Command):
    """The customer's signature does not match (PROTOCOL.md §7.7)."""

    type: ClassVar[str] = "signature_decline"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    pos_ref_id: str | None = None
    """If given, act only when the waiting transaction has this pos_ref_id."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCode(Command):
    """The authorisation code obtained by phone (PROTOCOL.md §7.8)."""

    type: ClassVar[str] = "auth_code"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    auth_code: str
    """Exactly 6 letters or digits."""
    pos_ref_id: str | None = None
    """If given, act only when the waiting transaction has this pos_ref_id."""


# --- queries and other transactions --------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class GetTransaction(Command):
    """Ask the terminal for the outcome of one transaction (PROTOCOL.md §7.10).

    A transaction, not control: SPI runs it as a flow that needs the lane idle;
    while a transaction runs the lane already asks the terminal about it.
    """

    type: ClassVar[str] = "get_transaction"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    pos_ref_id: str


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class GetLastTransaction(Command):
    """Ask the terminal for its last transaction (PROTOCOL.md §7.11)."""

    type: ClassVar[str] = "get_last_transaction"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Settle(Command):
    """Close the day with the acquirer (PROTOCOL.md §7.14)."""

    type: ClassVar[str] = "settle"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    pos_ref_id: str | None = None
    """For the sender's bookkeeping only; the terminal is not told (PROTOCOL.md §7.14)."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementEnquiry(Command):
    """Settlement totals without closing the day (PROTOCOL.md §7.14)."""

    type: ClassVar[str] = "settlement_enquiry"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    pos_ref_id: str | None = None
    """For the sender's bookkeeping only; the terminal is not told (PROTOCOL.md §7.14)."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Reversal(Command):
    """Reverse an earlier transaction by its pos_ref_id (PROTOCOL.md §7.15; not recoverable)."""

    type: ClassVar[str] = "reversal"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    pos_ref_id: str
    """The pos_ref_id of the transaction to reverse."""


# --- preauthorisation, account verification and zip (PROTOCOL.md §7.16, §7.17) ------------
#
# Each is a transaction with purchase-like guarantees: the record is written
# before the request is sent, a repeat is answered from it, and an outcome lost
# to a crash or a drop is recovered with get_transaction, never re-sent.


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class AccountVerify(Command):
    """Check that a card is valid without moving money (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "account_verify"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthOpen(Command):
    """Open a preauthorisation; the terminal names it (``preauth_id``) in the outcome (§7.16)."""

    type: ClassVar[str] = "preauth_open"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    amount_cents: int
    """The amount to hold, > 0 (``preauth_amount``)."""


@_register
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


@_register
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


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthExtend(Command):
    """Extend the life of an open preauthorisation (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_extend"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthCancel(Command):
    """Release an open preauthorisation entirely (PROTOCOL.md §7.16)."""

    type: ClassVar[str] = "preauth_cancel"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION
    records_tx: ClassVar[bool] = True

    pos_ref_id: str
    preauth_id: str
    """The id the terminal gave when the preauthorisation was opened."""


@_register
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


@_register
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


@_register
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


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalStatus(Command):
    """Ask for the terminal's status and battery (PROTOCOL.md §7.18)."""

    type: ClassVar[str] = "terminal_status"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalConfiguration(Command):
    """Ask for the terminal's configuration: model, ids, versions (PROTOCOL.md §7.19)."""

    type: ClassVar[str] = "terminal_configuration"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Print(Command):
    """Print text on the terminal's printer (PROTOCOL.md §7.20)."""

    type: ClassVar[str] = "print"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    key: str
    """Opaque to the lane and the terminal; comes back in the ``printing`` event."""
    payload: str
    """The text to print."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class SetConfig(Command):
    """Change the lane's receipt and printing options (PROTOCOL.md §7.1); absent = unchanged.

    A transaction, so that it applies from the next command in stream order on
    and never to one queued before it.
    """

    type: ClassVar[str] = "set_config"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    print_merchant_copy: bool | None = None
    prompt_for_customer_copy: bool | None = None
    signature_flow_on_eftpos: bool | None = None

    def check_together(self) -> None:
        if (
            self.print_merchant_copy is None
            and self.prompt_for_customer_copy is None
            and self.signature_flow_on_eftpos is None
        ):
            raise CommandError(Reason.INVALID_VALUE, "set_config must set at least one option")


# --- pay at table (PROTOCOL.md §7.23) --------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class SetTableConfig(Command):
    """Change the lane's pay-at-table configuration; absent = unchanged (PROTOCOL.md §7.23).

    The lane stores it in its profile and pushes it to the terminal at once
    when connected, and again at every ready-to-transact while enabled. A
    lane never set up answers the terminal's ``get_table_config`` with pay at
    table off; unset options start false or empty, ``answer_timeout_ms`` at
    10 000. A transaction, so it applies from the next command in stream order.
    """

    type: ClassVar[str] = "set_table_config"
    kind: ClassVar[CommandKind] = CommandKind.TRANSACTION

    enabled: bool | None = None
    operator_id_enabled: bool | None = None
    split_by_amount_enabled: bool | None = None
    equal_split_enabled: bool | None = None
    tipping_enabled: bool | None = None
    summary_report_enabled: bool | None = None
    table_retrieval_enabled: bool | None = None
    pay_button_label: str | None = None
    operator_id_label: str | None = None
    table_id_label: str | None = None
    operator_ids: tuple[str, ...] | None = None
    """The operator ids the terminal accepts; empty = any."""
    answer_timeout_ms: int | None = None
    """How long the lane waits for the POS's answer to a terminal request (1 000-60 000)."""

    def check_together(self) -> None:
        if all(getattr(self, spec.name) is None for spec in type(self).wire_fields[2:]):
            raise CommandError(
                Reason.INVALID_VALUE, "set_table_config must set at least one option"
            )


def check_table_config_value(name: str, value: object) -> None:
    """Raise ``CommandError`` unless ``value`` is valid for ``set_table_config``'s ``name``.

    The lane profile's stored pay-at-table config keeps the same rules.
    """
    specs = {spec.name: spec for spec in SetTableConfig.wire_fields[2:]}
    if name not in specs:
        raise InternalError(f"set_table_config has no field {name!r}")
    wanted, check = _RULES[name]
    check_kind(dataclasses.replace(specs[name], nullable=False), value, wanted)
    if check is not None:
        problem = check(name, value)
        if problem is not None:
            raise CommandError(Reason.INVALID_VALUE, problem)


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class BillDetails(Command):
    """The POS's answer to ``bill_requested`` or ``bill_payment_reported`` (PROTOCOL.md §7.23).

    Control: acts at once, also while a transaction runs. Either ``error`` or
    the bill (``bill_id``, ``total_cents``, ``outstanding_cents``), not both.
    ``table_id`` (and ``bill_id`` with an error) default to the request's.
    """

    type: ClassVar[str] = "bill_details"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    request_id: str
    """The ``request_id`` of the event answered."""
    bill_id: str | None = None
    table_id: str | None = None
    total_cents: int | None = None
    outstanding_cents: int | None = None
    error: str | None = None
    """``INVALID_TABLE_ID``, ``INVALID_BILL_ID`` or ``INVALID_OPERATOR_ID``: no such bill."""

    def check_together(self) -> None:
        totals = (self.total_cents, self.outstanding_cents)
        if self.error is not None:
            if any(value is not None for value in totals):
                raise CommandError(
                    Reason.INVALID_VALUE,
                    "bill_details with an error cannot carry total_cents or outstanding_cents",
                )
            return
        missing = [
            name
            for name, value in zip(
                ("bill_id", "total_cents", "outstanding_cents"),
                (self.bill_id, *totals),
                strict=True,
            )
            if value is None
        ]
        if missing:
            raise CommandError(
                Reason.INVALID_VALUE,
                f"bill_details needs either error or bill_id, total_cents and "
                f"outstanding_cents; {missing[0]} is missing",
            )


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTables(Command):
    """The POS's answer to ``open_tables_requested`` (PROTOCOL.md §7.23); control.

    ``tables`` holds ``{"table_id": str, "label": str, "outstanding_cents": int}``
    objects (``label`` defaults to ``""``, ``outstanding_cents`` to 0).
    """

    type: ClassVar[str] = "open_tables"
    kind: ClassVar[CommandKind] = CommandKind.CONTROL

    request_id: str
    """The ``request_id`` of the event answered."""
    tables: tuple[JsonObject, ...]
