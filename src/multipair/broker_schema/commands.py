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

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final, TypeVar

from multipair.broker_schema._fields import (
    FieldSpec,
    check_kind,
    field_specs,
    format_time,
    is_valid_pos_ref_id,
    to_utc,
)
from multipair.broker_schema.reasons import Reason
from multipair.exceptions import CommandError, InternalError

__all__ = [
    "COMMAND_TYPES",
    "MAX_CENTS",
    "AuthCode",
    "Cancel",
    "Cashout",
    "Command",
    "CommandKind",
    "GetLastTransaction",
    "GetTransaction",
    "MotoPurchase",
    "Pair",
    "PairCancel",
    "PairConfirm",
    "Print",
    "Purchase",
    "Refund",
    "Reversal",
    "Rule",
    "SetConfig",
    "Settle",
    "SettlementEnquiry",
    "SignatureAccept",
    "SignatureDecline",
    "TerminalConfiguration",
    "TerminalStatus",
    "Unpair",
    "add_rules",
    "is_valid_pos_ref_id",
    "printable",
    "register",
    "rule_of",
]

MAX_CENTS: Final = 999_999_999
"""The largest amount a command may carry: nine digits of cents ($9,999,999.99)."""

_MAX_COMMAND_ID_CHARS: Final = 128
_MAX_PRINT_KEY_CHARS: Final = 128
_AUTH_CODE = re.compile(r"[A-Za-z0-9]{6}")
_CONFIRMATION_CODE = re.compile(r"[0-9A-Fa-f]{6}")


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


def printable(low: int, high: int) -> _Check:
    """A rule: ``low``-``high`` printable characters."""

    def check(name: str, value: str) -> str | None:
        if not low <= len(value) <= high or not value.isprintable():
            return f"{name} must be {low}-{high} printable characters, got {value[:40]!r}"
        return None

    return check


def _non_empty(name: str, value: str) -> str | None:
    return f"{name} must not be empty" if not value else None


_CENTS = "an integer number of cents"
Rule = tuple[str | None, _Check | None]
"""A field rule: what a wrong type is told the field must be, and the value check."""

_RULES: Final[dict[str, Rule]] = {
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
}


def add_rules(rules: dict[str, Rule]) -> None:
    """Add the field rules of a family of commands kept in its own module.

    Call it before the family's classes are registered; a field name keeps
    one meaning, so a second rule for a name fails at import.
    """
    for name, rule in rules.items():
        if name in _RULES:
            raise InternalError(f"two rules for the command field {name!r}")
        _RULES[name] = rule


def rule_of(name: str) -> Rule:
    """The rule of an existing field, for a new field that means the same kind of value."""
    return _RULES[name]


def check_field(spec: FieldSpec, value: object) -> None:
    """Validate one value of a registered field by its rule; ``None`` passes when nullable."""
    wanted, check = _RULES[spec.name]
    check_kind(spec, value, wanted)
    if value is None or check is None:
        return
    problem = check(spec.name, value)
    if problem is not None:
        raise CommandError(Reason.INVALID_VALUE, problem)


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


def register(cls: _C) -> _C:
    """Register a command class of a family module (see :func:`add_rules`)."""
    return _register(cls)


def _validate(command: Command) -> None:
    for spec in type(command).wire_fields:
        value = getattr(command, spec.name)
        check_field(spec, value)
        if isinstance(value, _dt.datetime):
            object.__setattr__(command, spec.name, to_utc(value, spec.name))
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
