"""Stream entries of the v1 contract: two fields, ``v`` and ``body`` (JSON).

Rules this module keeps:

- ``decode_command`` raises nothing but ``CommandError`` for any input, with
  a ``reason`` from :class:`Reason` and a ``detail`` naming the field. It
  checks, in order: the entry's fields (``bad_entry``), ``v``
  (``unsupported_version``), size (``oversize``, before parsing), JSON
  (``not_json``, ``not_an_object``, ``duplicate_key``), ``type``
  (``missing_field``, ``wrong_type``, ``unknown_type``), unknown fields
  (``unknown_field``), missing fields, each field's type and value in
  declaration order, rules across fields, and last ``expires_at``
  (``expired``).
- An entry is exactly one ``v`` and one ``body``, nothing else and nothing
  twice. A client library that folds an entry into a mapping keeps the last
  of two equal names, so the lane hands the codec the entry's raw field
  *pairs* (a mapping is still accepted, for callers that have no repeats to
  show). A repeated field, like a repeated JSON key, would let one entry
  carry two commands, and which one ran would depend on the reader.
- A body with the same key twice is refused (``duplicate_key``): orjson,
  like most parsers, keeps the last one silently, so ``"amount_cents":1,
  "amount_cents":9000`` would charge what a reader of the first one did not
  expect.
- ``null`` for an optional field of a command means its default, the same as
  leaving the field out; a required field cannot be ``null``.
- An unknown field in a *command* is refused: money must not move on a
  command whose sender meant something we did not read (``amout_cents``).
  An unknown field in an *event* is ignored: events grow by new fields and
  old readers must keep working.
- Bodies are written with orjson: compact UTF-8, ``type`` first, then the
  fields in declaration order. Commands leave out fields that are ``None``;
  events write every field, ``null`` included, so their shape is visible.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from multipair.broker_schema._fields import UTC, FieldSpec, describe, from_json, to_json
from multipair.broker_schema.commands import COMMAND_TYPES, Command, is_valid_pos_ref_id
from multipair.broker_schema.events import EVENT_TYPES, Event
from multipair.broker_schema.keys import SCHEMA_VERSION
from multipair.broker_schema.reasons import Reason
from multipair.exceptions import CommandError, InternalError

__all__ = [
    "MAX_BODY_BYTES",
    "CommandHint",
    "command_body",
    "decode_command",
    "decode_event",
    "encode_command",
    "encode_event",
    "event_body",
    "event_from_json",
    "event_to_json",
    "peek_command",
]

MAX_BODY_BYTES: Final = 64 * 1024
"""The largest ``body`` accepted, in bytes of UTF-8."""

_VERSION_TEXT: Final = str(SCHEMA_VERSION)
_VERSION_BYTES: Final = _VERSION_TEXT.encode()
_ENTRY_FIELDS: Final = frozenset({"v", "body"})

EntryFields = (
    Mapping[bytes, bytes]
    | Mapping[str, str]
    | Mapping[bytes | str, bytes | str]
    | Sequence[tuple[bytes | str, bytes | str]]
)
"""One stream entry's fields: its (name, value) pairs as read, or a mapping of them."""

# A colon written as a JSON escape; its presence makes the quick duplicate-key count
# inconclusive (see _check_unique_keys).
_ESCAPED_COLON: Final = re.compile(rb"\\u003[aA]")


# --- the entry ---------------------------------------------------------------------------


def _as_text(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError(Reason.BAD_ENTRY, f"{what} is not UTF-8") from None
    raise CommandError(Reason.BAD_ENTRY, f"{what} must be bytes or text")


def _pairs_of(fields: object) -> list[tuple[object, object]]:
    """The (name, value) pairs of an entry given as pairs or as a mapping."""
    if isinstance(fields, Mapping):
        return list(fields.items())
    if isinstance(fields, list | tuple):
        pairs: list[tuple[object, object]] = []
        for pair in fields:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                break
            pairs.append((pair[0], pair[1]))
        else:
            return pairs
    raise CommandError(
        Reason.BAD_ENTRY, "a stream entry is the fields 'v' and 'body' (a map or name/value pairs)"
    )


def _entry_body(fields: object) -> bytes:
    """The checked ``body`` bytes of an entry (its ``v`` and size already checked)."""
    named: dict[str, object] = {}
    for name, value in _pairs_of(fields):
        text = _as_text(name, "an entry field name")
        if text in named:
            raise CommandError(
                Reason.BAD_ENTRY,
                f"a stream entry has one {text[:40]!r} field, not two: which one counts "
                "would depend on the reader",
            )
        named[text] = value
    extra = sorted(set(named) - _ENTRY_FIELDS)
    if extra:
        raise CommandError(
            Reason.BAD_ENTRY, f"a stream entry has only 'v' and 'body', not {extra[0][:40]!r}"
        )
    for name in ("v", "body"):
        if name not in named:
            raise CommandError(Reason.BAD_ENTRY, f"the stream entry has no {name!r} field")
    version = named["v"]
    if version != _VERSION_BYTES and version != _VERSION_TEXT:
        shown = _as_text(version, "'v'") if isinstance(version, bytes | str) else "?"
        raise CommandError(
            Reason.UNSUPPORTED_VERSION,
            f"v must be {_VERSION_TEXT!r} (schema version {SCHEMA_VERSION}), got {shown[:20]!r}",
        )
    body = named["body"]
    if isinstance(body, str):
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError(Reason.NOT_JSON, "body is not valid UTF-8 text") from None
    if not isinstance(body, bytes | bytearray):
        raise CommandError(Reason.BAD_ENTRY, "body must be bytes or text")
    if len(body) > MAX_BODY_BYTES:
        raise CommandError(
            Reason.OVERSIZE, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}"
        )
    return bytes(body)


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CommandError(Reason.NOT_JSON, f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError(Reason.NOT_AN_OBJECT, f"body must be a JSON object, got {describe(obj)}")
    _check_unique_keys(body, obj)
    return obj


def _check_unique_keys(body: bytes, parsed: dict[str, Any]) -> None:
    """Raise ``CommandError('duplicate_key')`` if an object of ``body`` repeats a key.

    orjson keeps the last of two equal keys, so the parsed value cannot show a
    repeat; the text can. The quick test counts colons, exactly: in JSON text
    a colon is either the separator of an object member (one per member) or
    a character inside a string. Without duplicates, the colons of the text
    are the members of the parsed tree plus the colons in its strings (keys
    and values); a repeated member adds a separator (and its own strings)
    that the parsed tree has lost, so there are more. Only a colon written as
    an escape (``\\u003a``) breaks the count: its text has no colon byte.
    Then, or to name the repeated key, the stdlib parser (which reports every
    pair to a hook) decides. The quick test costs about a microsecond on a
    typical purchase; the stdlib parse about four.
    """
    members = 0
    colons = 0
    todo: list[dict[str, Any] | list[Any]] = [parsed]
    while todo:
        node = todo.pop()
        values: Any
        if type(node) is dict:
            members += len(node)
            for key in node:
                colons += key.count(":")
            values = node.values()
        else:
            values = node
        for value in values:
            kind = type(value)
            if kind is str:
                colons += value.count(":")
            elif kind is dict or kind is list:
                todo.append(value)
    extra = body.count(b":") - colons - members  # > 0: a repeat, for sure
    if extra <= 0 and _ESCAPED_COLON.search(body) is None:
        return  # the count is exact: no repeat
    try:
        repeated = _repeated_key(body)
    except (ValueError, RecursionError):
        # The stdlib parser refused what orjson took (deeper nesting than this
        # stack allows; orjson accepts 1024 levels). Only a certain repeat is
        # named as one; otherwise the body cannot be vouched for.
        if extra <= 0:
            raise CommandError(
                Reason.NOT_JSON, "body nests too deeply to be checked for repeated keys"
            ) from None
        repeated = ""
    if repeated is None and extra <= 0:
        return
    shown = f"the key {repeated[:60]!r}" if repeated else "a key"
    raise CommandError(
        Reason.DUPLICATE_KEY,
        f"body has {shown} twice in one object; JSON readers disagree on which one counts",
    )


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Repeated(key)
            seen.add(key)
    return obj


def _members_named_once(body: bytes) -> dict[str, Any]:
    """The top-level members of ``body`` (a JSON object) whose key appears once in it."""
    try:
        pairs = json.loads(body.decode("utf-8"), object_pairs_hook=list)
    except (ValueError, RecursionError):
        return {}
    names = Counter(name for name, _ in pairs)
    return {name: value for name, value in pairs if names[name] == 1}


def _repeated_key(body: bytes) -> str | None:
    """The first key ``body`` (valid JSON) repeats within one object, or ``None``."""
    try:
        json.loads(body.decode("utf-8"), object_pairs_hook=_no_repeats)
    except _Repeated as found:
        return found.key
    return None


def _type_of(obj: Mapping[str, Any], known: Mapping[str, object], what: str) -> str:
    if "type" not in obj:
        raise CommandError(Reason.MISSING_FIELD, f"the {what} has no 'type' field")
    kind = obj["type"]
    if type(kind) is not str:
        raise CommandError(Reason.WRONG_TYPE, f"type must be a string, got {describe(kind)}")
    if kind not in known:
        raise CommandError(Reason.UNKNOWN_TYPE, f"no {what} has type {kind[:60]!r}")
    return kind


def _fields_from(
    specs: tuple[FieldSpec, ...], obj: Mapping[str, Any], what: str, *, strict: bool
) -> dict[str, Any]:
    if strict:
        names = {spec.name for spec in specs}
        unknown = sorted(name for name in obj if name != "type" and name not in names)
        if unknown:
            raise CommandError(Reason.UNKNOWN_FIELD, f"{what} has no field {unknown[0][:60]!r}")
    for spec in specs:
        if spec.required and spec.name not in obj:
            raise CommandError(Reason.MISSING_FIELD, f"{what} needs the field {spec.name!r}")
    return {
        spec.name: from_json(spec, obj[spec.name])
        for spec in specs
        # A command's optional field sent as null takes its default, as if left
        # out (docs/broker-schema.md, "Value rules"); a required one is refused.
        if spec.name in obj and not (strict and obj[spec.name] is None and not spec.required)
    }


def _body_of(item: Command | Event, *, skip_none: bool) -> dict[str, object]:
    body: dict[str, object] = {"type": item.type}
    for spec in item.wire_fields:
        value = getattr(item, spec.name)
        if value is None and skip_none:
            continue
        body[spec.name] = to_json(spec, value)
    return body


def _entry(body: dict[str, object]) -> dict[str, bytes]:
    data = orjson.dumps(body)
    if len(data) > MAX_BODY_BYTES:
        raise CommandError(
            Reason.OVERSIZE, f"body would be {len(data)} bytes; the limit is {MAX_BODY_BYTES}"
        )
    return {"v": _VERSION_BYTES, "body": data}


# --- commands ----------------------------------------------------------------------------


def command_body(command: Command) -> dict[str, object]:
    """The JSON object of a command, ``type`` first, fields that are ``None`` left out."""
    return _body_of(command, skip_none=True)


def encode_command(command: Command) -> dict[str, bytes]:
    """The fields of a stream entry for ``XADD`` (``v`` and ``body``)."""
    return _entry(command_body(command))


def decode_command(fields: EntryFields | object, *, now: _dt.datetime | None = None) -> Command:
    """Validate a command stream entry and build the command.

    ``fields`` is what ``XREADGROUP`` returns for one entry (bytes or text).
    ``now`` (aware; default: the current time) decides expiry. Raises
    ``CommandError(reason, detail)`` for every kind of bad entry and nothing
    else.
    """
    if now is None:
        now = _dt.datetime.now(UTC)
    elif now.tzinfo is None:
        raise InternalError("decode_command needs an aware `now`")
    obj = _parse_object(_entry_body(fields))
    kind = _type_of(obj, COMMAND_TYPES, "command")
    cls = COMMAND_TYPES[kind]
    kwargs = _fields_from(cls.wire_fields, obj, f"command {kind!r}", strict=True)
    command = cls(**kwargs)
    command.check_not_expired(now)
    return command


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandHint:
    """What can be read from an entry that may be invalid, to address its rejection."""

    command_id: str | None = None
    command_type: str | None = None
    pos_ref_id: str | None = None


def peek_command(fields: object) -> CommandHint:
    """Best-effort ``command_id``, ``type`` and ``pos_ref_id`` of any entry; never raises.

    A value is given only when it is itself well formed, so a rejection event
    never echoes junk (an over-long or non-printable id comes back ``None``),
    and only when it is not ambiguous: of a body that repeats keys, only the
    keys it names once are read.
    """
    try:
        body = _entry_body(fields)
        try:
            obj = _parse_object(body)
        except CommandError as exc:
            if exc.reason != Reason.DUPLICATE_KEY:
                raise
            obj = _members_named_once(body)
    except CommandError:
        return CommandHint()
    command_id = obj.get("command_id")
    kind = obj.get("type")
    pos_ref_id = obj.get("pos_ref_id")
    return CommandHint(
        command_id=command_id
        if type(command_id) is str and 0 < len(command_id) <= 128 and command_id.isprintable()
        else None,
        command_type=kind if type(kind) is str and kind in COMMAND_TYPES else None,
        pos_ref_id=pos_ref_id if is_valid_pos_ref_id(pos_ref_id) else None,
    )


# --- events ------------------------------------------------------------------------------


def event_body(event: Event) -> dict[str, object]:
    """The JSON object of an event: ``type`` first, then every field (``null`` included)."""
    return _body_of(event, skip_none=False)


def event_to_json(event: Event) -> bytes:
    """The JSON text of an event's body (what a transaction record keeps as its outcome)."""
    return orjson.dumps(event_body(event))


def encode_event(event: Event) -> dict[str, bytes]:
    """The fields of a stream entry for ``XADD`` (``v`` and ``body``)."""
    return _entry(event_body(event))


def _event_from_object(obj: Mapping[str, Any]) -> Event:
    kind = _type_of(obj, EVENT_TYPES, "event")
    cls = EVENT_TYPES[kind]
    kwargs = _fields_from(cls.wire_fields, obj, f"event {kind!r}", strict=False)
    return cls(**kwargs)


def event_from_json(body: bytes | str) -> Event:
    """Build an event from its body's JSON text (fields unknown to this version are ignored).

    Raises ``CommandError`` with the same reasons as :func:`decode_command`.
    """
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return _event_from_object(_parse_object(data))


def decode_event(fields: EntryFields | object) -> Event:
    """Build an event from an events-stream entry.

    Fields this version does not know are ignored; an unknown ``type`` raises
    ``CommandError('unknown_type')`` so a reader can skip it. The reasons are
    those of :func:`decode_command` (the schema has one validation error).
    """
    return _event_from_object(_parse_object(_entry_body(fields)))
