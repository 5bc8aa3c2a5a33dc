"""Pay-at-table commands (PROTOCOL.md §7.23): the lane's set-up, and the POS's answers.

``set_table_config`` changes what the lane tells the terminal; ``bill_details``
and ``open_tables`` answer, by ``request_id``, the requests the terminal made
through the lane (the ``bill_requested``, ``bill_payment_reported`` and
``open_tables_requested`` events). The rules of
:mod:`multipair.broker_schema.commands` apply; this module adds its fields'.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from multipair.broker_schema._fields import JsonObject
from multipair.broker_schema.commands import (
    MAX_CENTS,
    Command,
    CommandKind,
    add_rules,
    check_field,
    printable,
    register,
    rule_of,
)
from multipair.broker_schema.reasons import Reason
from multipair.exceptions import CommandError, InternalError

__all__ = [
    "BILL_ERRORS",
    "BillDetails",
    "OpenTables",
    "SetTableConfig",
    "check_table_config_value",
]

_MAX_PAT_TEXT: Final = 64
_MAX_OPERATOR_IDS: Final = 100
_MAX_OPERATOR_ID_CHARS: Final = 32
_MIN_ANSWER_MS: Final = 1_000
_MAX_ANSWER_MS: Final = 60_000
_MAX_TABLES: Final = 1_000

BILL_ERRORS: Final = ("INVALID_TABLE_ID", "INVALID_BILL_ID", "INVALID_OPERATOR_ID")
"""The errors a ``bill_details`` command may send instead of a bill (PROTOCOL.md §7.23)."""


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


add_rules(
    {
        "enabled": (None, None),
        "operator_id_enabled": (None, None),
        "split_by_amount_enabled": (None, None),
        "equal_split_enabled": (None, None),
        "tipping_enabled": (None, None),
        "summary_report_enabled": (None, None),
        "table_retrieval_enabled": (None, None),
        "pay_button_label": (None, printable(0, _MAX_PAT_TEXT)),
        "operator_id_label": (None, printable(0, _MAX_PAT_TEXT)),
        "table_id_label": (None, printable(0, _MAX_PAT_TEXT)),
        "operator_ids": (None, _operator_ids),
        "answer_timeout_ms": ("an integer number of milliseconds", _answer_timeout),
        "request_id": rule_of("command_id"),
        "bill_id": (None, printable(1, _MAX_PAT_TEXT)),
        "table_id": (None, printable(1, _MAX_PAT_TEXT)),
        "total_cents": rule_of("tip_cents"),
        "outstanding_cents": rule_of("tip_cents"),
        "error": (None, _bill_error),
        "tables": ("a list of {table_id, label, outstanding_cents} objects", _tables),
    }
)


@register
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
    check_field(dataclasses.replace(specs[name], nullable=False), value)


@register
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


@register
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
