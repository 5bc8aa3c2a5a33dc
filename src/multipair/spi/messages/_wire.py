"""The declarative codec every SPI message uses: declare the fields once, read and write them here.

A message is a frozen, slotted, keyword-only dataclass whose fields are
declared in wire order (STYLE.md 15). What a field is on the wire follows
from its annotation, and anything else from :func:`wire` metadata:

- ``str`` is text, ``int`` an amount in cents (``0`` to :data:`MAX_AMOUNT`,
  never ``bool``), ``bool`` a flag; ``X | None`` is nullable (sent as
  ``null``); ``tuple[str, ...]`` a list of texts, ``tuple[R, ...]`` a list
  of records, a dataclass ``R`` a nested record, ``JsonObject`` passed as is.
- :func:`wire` says the rest: path, local fields, read defaults, conditions,
  mirrors, exact lengths, flattened groups (its docstring lists them).

Four generic functions follow the declaration: :func:`validate` (POS side,
when a message is built: :class:`~multipair.exceptions.InvalidRequest`),
:func:`encode` (its ``data``, keys in declaration order),
:func:`decode` (terminal side, reading a POS request strictly:
:class:`~multipair.exceptions.RemoteProtocolError`) and :func:`read` (POS
side, reading a terminal message leniently: a field of the wrong type reads
as ``None``, §2.4). No I/O, no clock: this is protocol core (STYLE.md 1).
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from enum import Enum
from typing import Any, Final, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

from multipair.exceptions import InvalidRequest, RemoteProtocolError
from multipair.spi.envelope import JsonObject

__all__ = [
    "MAX_AMOUNT",
    "REQUIRED",
    "Checked",
    "Kind",
    "Spec",
    "as_bool",
    "as_int",
    "as_str",
    "decode",
    "encode",
    "read",
    "specs",
    "validate",
    "wire",
]

# The largest integer a JS peer reads exactly (Number.MAX_SAFE_INTEGER); orjson
# cannot even write integers beyond 64 bits, so a bigger amount must not build.
MAX_AMOUNT: Final = 2**53 - 1

# ---------------------------------------------------------------------------
# Lenient readers of terminal values (§2.4: "Parse leniently")
# ---------------------------------------------------------------------------

_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")


def as_int(value: object) -> int | None:
    """An integer from an int, a whole float or a decimal string; ``None`` for anything else.

    ``bool`` is not a number here, and only ASCII digits count (``int()``
    alone would also take ``"1_000"`` and non-Latin digits).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER_TEXT.fullmatch(text):
            return None
        try:
            return int(text)
        except ValueError:  # more digits than Python converts (sys.int_info)
            return None
    return None


def as_bool(value: object) -> bool | None:
    """A JSON boolean, or the string ``"true"``/``"false"`` in any case; else ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return None


def as_str(value: object) -> str | None:
    """A string as is, an integer as its digits (ids may come as numbers); else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # too many digits to print
            return None
    return None


def _as_yes_no(value: object) -> bool | None:
    """A boolean, or ``"Yes"``/``"No"`` in any case (settlement scheme lines, §7.14)."""
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    return as_bool(value)


# ---------------------------------------------------------------------------
# The declaration: field metadata and what is derived from it
# ---------------------------------------------------------------------------


class _Required:
    """The ``read_default`` that makes a field required on read although it has a default."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
_FIELD_DEFAULT: Final = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Wire:
    path: tuple[str, ...] = ()
    local: bool = False
    read_default: object = _FIELD_DEFAULT
    only_if: tuple[str, object] | None = None
    sent_if: tuple[str, object] | None = None
    omit_empty: bool = False
    mirror: tuple[str, ...] = ()
    length: tuple[int, str] | None = None
    flatten: bool = False
    only: frozenset[str] | None = None
    order: tuple[str, ...] = ()
    yes_no: bool = False
    event: bool = False


_NO_WIRE: Final = _Wire()


def wire(
    *,
    path: tuple[str, ...] = (),
    local: bool = False,
    read_default: object = _FIELD_DEFAULT,
    only_if: tuple[str, object] | None = None,
    sent_if: tuple[str, object] | None = None,
    omit_empty: bool = False,
    mirror: tuple[str, ...] = (),
    length: tuple[int, str] | None = None,
    flatten: bool = False,
    only: frozenset[str] | None = None,
    order: tuple[str, ...] = (),
    yes_no: bool = False,
    event: bool = False,
) -> Mapping[str, object]:
    """Field metadata: how a field sits on the wire when its annotation does not say it all.

    - ``path``: where it sits (default: ``(name,)``); ``local``: never sent or read.
    - ``read_default``: the value when absent on read (default: the field's);
      :data:`REQUIRED` makes a field with a default required on read.
    - ``only_if=(name, value)``: the field exists only when field ``name``
      has ``value``, neither sent nor read otherwise; ``sent_if``: sent only
      then, read whenever present; ``omit_empty``: not sent when falsy.
    - ``mirror``: a second path the value is also written to, after every
      other field.
    - ``length=(n, problem)``: text of exactly ``n`` characters, else
      ``InvalidRequest(problem)``.
    - ``flatten``: a record whose keys go into this object; ``only`` filters
      the keys sent (every key is read), ``order`` reorders them.
    - ``yes_no``: a flag that may read ``"Yes"``/``"No"``.
    - ``event``: a parsed terminal message's event, not a data key.
    """
    return {
        "wire": _Wire(
            path=path,
            local=local,
            read_default=read_default,
            only_if=only_if,
            sent_if=sent_if,
            omit_empty=omit_empty,
            mirror=mirror,
            length=length,
            flatten=flatten,
            only=only,
            order=order,
            yes_no=yes_no,
            event=event,
        )
    }


class Kind(Enum):
    """What a field is on the wire, from its annotation."""

    TEXT = "text"
    AMOUNT = "amount"
    FLAG = "flag"
    TEXTS = "texts"
    OBJECT = "object"
    RECORD = "record"
    RECORDS = "records"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class Spec:
    """One field as the codec sees it: derived once per class from its declaration."""

    name: str
    kind: Kind
    path: tuple[str, ...]
    nullable: bool
    init: bool
    record: type[Any] | None
    default: Callable[[], object] | None  # None: required on read
    meta: _Wire


def _classify(hint: Any) -> tuple[Kind, bool, type[Any] | None]:
    """``(kind, nullable, record type)`` of an annotation."""
    nullable = False
    if get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint):
        nullable = True
        (hint,) = [a for a in get_args(hint) if a is not type(None)]
    simple = {str: Kind.TEXT, int: Kind.AMOUNT, bool: Kind.FLAG}
    if hint in simple:
        return simple[hint], nullable, None
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return (Kind.TEXTS, nullable, None) if item is str else (Kind.RECORDS, nullable, item)
    if get_origin(hint) is dict:
        return Kind.OBJECT, nullable, None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return Kind.RECORD, nullable, hint
    raise TypeError(f"no wire form for the annotation {hint!r}")


def _default_of(f: dataclasses.Field[Any], meta: _Wire) -> Callable[[], object] | None:
    if meta.read_default is REQUIRED:
        return None
    if meta.read_default is not _FIELD_DEFAULT:
        value = meta.read_default
        return lambda: value
    if f.default is not MISSING:
        default = f.default
        return lambda: default
    if f.default_factory is not MISSING:
        return f.default_factory
    return None


_SPECS: Final[dict[type[Any], tuple[Spec, ...]]] = {}


def specs(cls: type[Any]) -> tuple[Spec, ...]:
    """The fields of a declared message class, in declaration (wire) order (derived once)."""
    known = _SPECS.get(cls)
    if known is not None:
        return known
    hints = get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("wire", _NO_WIRE)
        assert isinstance(meta, _Wire)
        kind, nullable, record = _classify(hints[f.name])
        if meta.flatten:
            kind = Kind.GROUP
        path = meta.path or (f.name,)
        result.append(
            Spec(f.name, kind, path, nullable, f.init, record, _default_of(f, meta), meta)
        )
    _SPECS[cls] = tuple(result)
    return _SPECS[cls]


def _holds(obj: object, condition: tuple[str, object] | None) -> bool:
    return condition is None or getattr(obj, condition[0]) == condition[1]


# ---------------------------------------------------------------------------
# Validation (POS side, when a message is built)
# ---------------------------------------------------------------------------


def _check_amount(name: str, value: object, *, nullable: bool) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"{name} must be an int number of cents, got {type(value).__name__} {value!r:.40}"
        )
    if value < 0:
        raise InvalidRequest(f"{name} must be >= 0, got {value}")
    if value > MAX_AMOUNT:
        raise InvalidRequest(f"{name} must be <= {MAX_AMOUNT}")


def _check_text(name: str, value: object, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not sendable as JSON text
        raise InvalidRequest(f"{name} is not valid Unicode text") from None


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a bool, got {type(value).__name__}")


def validate(obj: object) -> None:
    """Check every text, amount, flag and list of texts of ``obj``; ``InvalidRequest`` if bad.

    Records, lists of records and raw objects are not checked here: a
    record checks itself when it is built (if it is :class:`Checked`).
    """
    for spec in specs(type(obj)):
        if not spec.init:
            continue
        value = getattr(obj, spec.name)
        if spec.kind is Kind.TEXT:
            _check_text(spec.name, value, nullable=spec.nullable)
        elif spec.kind is Kind.AMOUNT:
            _check_amount(spec.name, value, nullable=spec.nullable)
        elif spec.kind is Kind.FLAG:
            _check_flag(spec.name, value)
        elif spec.kind is Kind.TEXTS:
            if not isinstance(value, tuple):
                raise InvalidRequest(f"{spec.name} must be a tuple of str")
            for item in value:
                _check_text(f"{spec.name} item", item)
        if spec.meta.length is not None:
            size, problem = spec.meta.length
            if len(value) != size:
                raise InvalidRequest(problem)


class Checked:
    """Mixin of declared records that validate themselves when built (:func:`validate`).

    A class adds a cross-field rule by overriding :meth:`_check`.
    """

    __slots__ = ()

    def __post_init__(self) -> None:
        validate(self)
        self._check()

    def _check(self) -> None:
        """Rules across fields, after every field passed on its own; none by default."""


# ---------------------------------------------------------------------------
# Writing (POS side)
# ---------------------------------------------------------------------------


def _put(data: JsonObject, path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _to_wire(spec: Spec, value: Any) -> object:
    if spec.kind is Kind.TEXTS:
        return list(value)
    if spec.kind is Kind.RECORDS:
        return [encode(item) for item in value]
    if spec.kind is Kind.RECORD and value is not None:
        return encode(value)
    return value


def _encode_into(
    obj: object,
    data: JsonObject,
    mirrors: list[tuple[tuple[str, ...], object]],
    only: frozenset[str] | None = None,
    order: tuple[str, ...] = (),
) -> None:
    declared = specs(type(obj))
    if order:
        declared = tuple(sorted(declared, key=lambda s: order.index(s.name)))
    for spec in declared:
        meta = spec.meta
        if meta.local or (only is not None and spec.name not in only):
            continue
        if not (_holds(obj, meta.only_if) and _holds(obj, meta.sent_if)):
            continue
        value = getattr(obj, spec.name)
        if meta.omit_empty and not value:
            continue
        if spec.kind is Kind.GROUP:
            _encode_into(value, data, mirrors, meta.only, meta.order)
            continue
        wire_value = _to_wire(spec, value)
        _put(data, spec.path, wire_value)
        if meta.mirror:
            mirrors.append((meta.mirror, wire_value))


def encode(obj: object) -> JsonObject:
    """The wire object of a declared message or record, keys in declaration order."""
    data: JsonObject = {}
    mirrors: list[tuple[tuple[str, ...], object]] = []
    _encode_into(obj, data, mirrors)
    for path, value in mirrors:
        _put(data, path, value)
    return data


# ---------------------------------------------------------------------------
# Reading a POS request (terminal side): strict about substance
# ---------------------------------------------------------------------------


class _Reader:
    """Reads one object of a POS request; ``where`` names it in errors.

    A missing required key, or a present value that is not what it should be,
    raises ``RemoteProtocolError``; ``null`` counts as missing, except for a
    nullable field, where it reads as ``None``. Numbers may come as decimal
    strings and booleans as ``"true"``/``"false"``.
    """

    __slots__ = ("_data", "_where")

    def __init__(self, where: str, data: Mapping[str, Any] | None) -> None:
        self._where = where
        self._data: Mapping[str, Any] = data if data is not None else {}

    def _fail(self, key: str, problem: str) -> NoReturn:
        raise RemoteProtocolError(f"{self._where}: {key} {problem}")

    def child(self, key: str, *, required: bool) -> _Reader:
        value = self._data.get(key)
        if value is None and not required:
            return _Reader(f"{self._where}.{key}", None)
        if not isinstance(value, Mapping):
            self._fail(key, "is missing or not an object")
        return _Reader(f"{self._where}.{key}", value)

    def fields(self, cls: type[Any]) -> dict[str, object]:
        """The init values of every declared field of ``cls`` found in this object."""
        values: dict[str, object] = {}
        for spec in specs(cls):
            if spec.meta.local or not spec.init:
                continue
            condition = spec.meta.only_if
            if condition is not None and values.get(condition[0]) != condition[1]:
                continue
            if spec.kind is Kind.GROUP:
                assert spec.record is not None
                values[spec.name] = spec.record(**self.fields(spec.record))
                continue
            reader = self
            for key in spec.path[:-1]:
                reader = reader.child(key, required=spec.default is None)
            values[spec.name] = reader.value(spec, spec.path[-1])
        return values

    def value(self, spec: Spec, key: str) -> object:
        value = self._data.get(key)
        if value is None:
            if spec.nullable and key in self._data:
                return None
            if spec.default is None:
                self._fail(key, "is missing")
            return spec.default()
        if spec.kind in _STRICT:
            convert, expected, shown = _STRICT[spec.kind]
            converted = convert(value)
            if converted is None:
                self._fail(key, f"is not {expected}: {shown(value)}")
            return converted
        if spec.kind in (Kind.OBJECT, Kind.RECORD):
            if not isinstance(value, dict):
                self._fail(key, "is not an object")
            return value if spec.kind is Kind.OBJECT else self._record(spec, key, value)
        if not isinstance(value, list):
            self._fail(key, "is not a list")
        if spec.kind is Kind.TEXTS:
            texts = [as_str(item) for item in value]
            if None in texts:
                self._fail(key, "holds a non-string")
            return tuple(texts)
        # A list entry that is not an object reads as an empty one.
        return tuple(
            self._record(spec, key, item if isinstance(item, dict) else None) for item in value
        )

    def _record(self, spec: Spec, key: str, data: Mapping[str, Any] | None) -> object:
        assert spec.record is not None
        return spec.record(**_Reader(f"{self._where}.{key}", data).fields(spec.record))


# How each scalar kind is read from a POS request, named in errors, and shown.
_STRICT: Final[Mapping[Kind, tuple[Callable[[object], object], str, Callable[[object], str]]]] = {
    Kind.TEXT: (as_str, "a string", lambda value: type(value).__name__),
    Kind.AMOUNT: (as_int, "an integer", lambda value: f"{value!r:.40}"),
    Kind.FLAG: (as_bool, "a boolean", lambda value: f"{value!r:.40}"),
}


_T = TypeVar("_T")


def decode(cls: type[_T], where: str, data: Mapping[str, Any] | None) -> _T:
    """Read a POS request of class ``cls`` from its ``data``; ``where`` is its event.

    A value the POS should not have sent (an ``InvalidRequest`` when built)
    is its fault: ``RemoteProtocolError``.
    """
    try:
        return cls(**_Reader(where, data).fields(cls))
    except InvalidRequest as exc:
        raise RemoteProtocolError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------------------
# Reading a terminal message (POS side): lenient
# ---------------------------------------------------------------------------


def _at(data: Mapping[str, Any], path: tuple[str, ...]) -> object:
    value: object = data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


_LENIENT: Final[Mapping[Kind, Callable[[object], object]]] = {
    Kind.TEXT: as_str,
    Kind.AMOUNT: as_int,
    Kind.FLAG: as_bool,
}


def read(cls: type[Any], message_id: str, event: str, data: Mapping[str, Any]) -> dict[str, object]:
    """The init values of ``cls`` from a terminal message's ``data``: wrong types read as ``None``.

    A field without a default must be a non-empty string, or the message
    cannot mean anything: ``RemoteProtocolError``. A nested terminal message
    (a class with ``parse``) is parsed with the same id and event.
    """
    values: dict[str, object] = {}
    for spec in specs(cls):
        meta = spec.meta
        if meta.local:
            continue
        if meta.event:
            values[spec.name] = event
            continue
        raw = _at(data, spec.path)
        if spec.default is None:
            if not isinstance(raw, str) or not raw:
                raise RemoteProtocolError(f"{event} without {_required_strings(cls)}")
            values[spec.name] = raw
        elif spec.kind in _LENIENT:
            parse = _as_yes_no if meta.yes_no else _LENIENT[spec.kind]
            value = parse(raw)
            values[spec.name] = spec.default() if value is None else value
        elif spec.kind is Kind.RECORD:
            values[spec.name] = _record(spec, message_id, event, raw)
        elif spec.kind is Kind.RECORDS:
            items = raw if isinstance(raw, list) else []
            values[spec.name] = tuple(
                _record(spec, message_id, event, item) for item in items if isinstance(item, dict)
            )
    return values


def _required_strings(cls: type[Any]) -> str:
    """``a x string`` or ``x and y strings``: what a terminal message cannot do without."""
    paths = [
        ".".join(s.path)
        for s in specs(cls)
        if s.default is None and not (s.meta.local or s.meta.event)
    ]
    return f"a {paths[0]} string" if len(paths) == 1 else f"{' and '.join(paths)} strings"


def _record(spec: Spec, message_id: str, event: str, raw: object) -> object:
    if not isinstance(raw, dict):
        return None
    record = spec.record
    assert record is not None
    parse = getattr(record, "parse", None)
    if parse is not None:
        return parse(message_id, event, raw)
    return record(**read(record, message_id, event, raw))
