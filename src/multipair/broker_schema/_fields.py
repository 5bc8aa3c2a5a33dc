"""The machinery commands and events share: field kinds, JSON mapping, times.

Rules this module keeps:

- A field's JSON kind comes from its annotation, once, when its class is
  registered: ``str``, ``int``, ``bool``, ``datetime``, a JSON object
  (``JsonObject``), a tuple of JSON objects or a tuple of strings, each
  optionally ``| None``.
  Nothing else may appear in the contract, so a field cannot quietly take a
  shape the codec does not check.
- JSON booleans are not integers here (``True`` is not 1 cent), and a JSON
  number with a fraction or an exponent (``12.5``, ``12.0``, ``1e3``) is not
  an integer either: orjson gives ``float`` for all of them and we refuse
  every ``float``.
- Times travel as ISO-8601 text with an explicit offset; they are held as
  aware UTC ``datetime`` values and written ``2025-01-31T09:30:00.250Z``
  (milliseconds, ``Z``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Union

import orjson

from multipair.broker_schema.reasons import Reason
from multipair.exceptions import CommandError, InternalError

__all__ = [
    "UTC",
    "FieldSpec",
    "JsonObject",
    "Kind",
    "check_kind",
    "describe",
    "field_specs",
    "format_time",
    "from_json",
    "is_valid_pos_ref_id",
    "parse_time",
    "to_json",
    "to_utc",
    "truncate_to_ms",
]

UTC: Final = _dt.UTC

JsonObject = dict[str, Any]
"""A decoded JSON object; it appears only at the JSON edge (event payloads)."""

_MAX_TIME_CHARS: Final = 40
_POS_REF_ID = re.compile(r"[A-Za-z0-9_:.\-]{1,64}")


class Kind(Enum):
    """What a field holds on the wire."""

    STR = "a string"
    INT = "an integer"
    BOOL = "true or false"
    TIME = "an ISO-8601 time with a UTC offset"
    OBJECT = "a JSON object"
    OBJECT_LIST = "a list of JSON objects"
    STR_LIST = "a list of strings"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a command or event: its name, kind and whether it may be absent."""

    name: str
    kind: Kind
    nullable: bool
    required: bool


_PLAIN_KINDS: Final[dict[object, Kind]] = {
    str: Kind.STR,
    int: Kind.INT,
    bool: Kind.BOOL,
    _dt.datetime: Kind.TIME,
}


def _kind_of(annotation: object, where: str) -> tuple[Kind, bool]:
    nullable = False
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise InternalError(f"{where}: only `X | None` unions are allowed")
        nullable = True
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if annotation in _PLAIN_KINDS:
        return _PLAIN_KINDS[annotation], nullable
    if origin is dict:
        return Kind.OBJECT, nullable
    if origin is tuple:
        items = typing.get_args(annotation)
        if len(items) == 2 and items[1] is Ellipsis and typing.get_origin(items[0]) is dict:
            return Kind.OBJECT_LIST, nullable
        if len(items) == 2 and items[1] is Ellipsis and items[0] is str:
            return Kind.STR_LIST, nullable
    raise InternalError(f"{where}: annotation {annotation!r} has no JSON kind")


def field_specs(cls: type[Any]) -> tuple[FieldSpec, ...]:
    """The wire fields of a dataclass, in declaration order (checked once, at import)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        kind, nullable = _kind_of(hints[f.name], f"{cls.__name__}.{f.name}")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append(FieldSpec(f.name, kind, nullable, required))
    return tuple(specs)


def is_valid_pos_ref_id(value: object) -> bool:
    """True for 1-64 ASCII letters, digits and ``- _ : .`` (PROTOCOL.md §7.1)."""
    return isinstance(value, str) and _POS_REF_ID.fullmatch(value) is not None


def describe(value: object) -> str:
    """A short JSON rendering of a bad value, for a rejection's ``detail``."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check_kind(spec: FieldSpec, value: object, wanted: str | None = None) -> None:
    """Raise ``CommandError('wrong_type')`` unless ``value`` has the field's kind."""
    if value is None:
        if spec.nullable:
            return
        ok = False
    elif spec.kind is Kind.STR:
        ok = type(value) is str
    elif spec.kind is Kind.INT:
        ok = type(value) is int
    elif spec.kind is Kind.BOOL:
        ok = type(value) is bool
    elif spec.kind is Kind.TIME:
        ok = isinstance(value, _dt.datetime) and value.tzinfo is not None
    elif spec.kind is Kind.OBJECT:
        ok = type(value) is dict
    elif spec.kind is Kind.STR_LIST:
        ok = type(value) is tuple and all(type(item) is str for item in value)
    else:
        ok = type(value) is tuple and all(type(item) is dict for item in value)
    if not ok:
        raise CommandError(
            Reason.WRONG_TYPE,
            f"{spec.name} must be {wanted or spec.kind.value}, got {describe(value)}",
        )


def from_json(spec: FieldSpec, value: object) -> object:
    """Turn a decoded JSON value into the field's Python shape (times, tuples)."""
    if spec.kind is Kind.TIME and type(value) is str:
        return parse_time(value, spec.name)
    if spec.kind in (Kind.OBJECT_LIST, Kind.STR_LIST) and type(value) is list:
        return tuple(value)
    if spec.kind is Kind.TIME and value is not None:
        raise CommandError(
            Reason.WRONG_TYPE, f"{spec.name} must be {spec.kind.value}, got {describe(value)}"
        )
    return value


def to_json(spec: FieldSpec, value: object) -> object:
    """The JSON shape of a field value."""
    if spec.kind is Kind.TIME and isinstance(value, _dt.datetime):
        return format_time(value)
    if spec.kind in (Kind.OBJECT_LIST, Kind.STR_LIST) and isinstance(value, tuple):
        return list(value)
    return value


def format_time(moment: _dt.datetime) -> str:
    """``2025-01-31T09:30:00.250Z``: UTC, milliseconds, ``Z`` (sub-millisecond digits dropped)."""
    if moment.tzinfo is None:
        raise InternalError("times in the broker contract are aware (UTC)")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    # isoformat, not strftime: "%Y" does not pad years before 1000 on glibc.
    return utc.isoformat(timespec="milliseconds") + "Z"


def parse_time(text: str, name: str = "time") -> _dt.datetime:
    """Parse ISO-8601 text with an explicit offset into an aware UTC ``datetime``.

    Raises ``CommandError('invalid_value')`` for text that is not such a time,
    including a time without an offset (its zone would be a guess).
    """
    moment: _dt.datetime | None
    try:
        moment = _dt.datetime.fromisoformat(text) if len(text) <= _MAX_TIME_CHARS else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CommandError(
            Reason.INVALID_VALUE,
            f"{name} must be an ISO-8601 time with a UTC offset such as "
            f'"2025-01-31T09:30:00Z", got {describe(text)}',
        )
    return to_utc(moment, name)


def to_utc(moment: _dt.datetime, name: str = "time") -> _dt.datetime:
    """An aware ``moment`` in UTC; ``CommandError('invalid_value')`` past the calendar's ends.

    ``9999-12-31T23:59:59-23:59`` is a valid ISO-8601 time whose UTC instant
    falls after year 9999, which ``datetime`` cannot hold (``OverflowError``).
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise CommandError(
            Reason.INVALID_VALUE,
            f"{name} must fall within years 1-9999 in UTC, got {moment.isoformat()!r}",
        ) from None


def truncate_to_ms(moment: _dt.datetime) -> _dt.datetime:
    """``moment`` in UTC with its microseconds cut to whole milliseconds (as it travels)."""
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)
