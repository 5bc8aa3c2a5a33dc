"""Property tests: no input makes decode_command raise anything but CommandError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from multipair.broker_schema import (
    COMMAND_TYPES,
    MAX_CENTS,
    Purchase,
    Reason,
    decode_command,
    decode_event,
    encode_command,
    peek_command,
)
from multipair.exceptions import CommandError
from tests.broker_schema.helpers import NOW, entry

REASONS = {reason.value for reason in Reason}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=10,
)

_ALL_FIELDS = sorted({spec.name for cls in COMMAND_TYPES.values() for spec in cls.wire_fields})
field_names = st.sampled_from([*_ALL_FIELDS, "type", "amout_cents", ""])

plausible_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=MAX_CENTS + 3)
    | st.floats(min_value=-10, max_value=10_000)
    | st.sampled_from(
        ["order-17", "c1", "", "2030-01-01T00:00:00Z", "2020-01-01T00:00:00", "123456", "75B56F"]
    )
    | st.text(max_size=70)
)


@st.composite
def command_like_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies of a real command type with its own fields set to plausible or odd values."""
    kind = draw(st.sampled_from(sorted(COMMAND_TYPES)))
    names = [spec.name for spec in COMMAND_TYPES[kind].wire_fields]
    body: dict[str, Any] = {"type": kind}
    body.update(draw(st.dictionaries(st.sampled_from(names), plausible_values)))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        body[draw(field_names)] = draw(json_values)
    return body


def _decodes_or_rejects(fields: Any) -> str | None:
    """Decode; a rejection must be a CommandError with a documented reason and a detail.

    Returns the reason, or None when the entry is a valid command.
    """
    peek_command(fields)  # never raises either
    try:
        decode_command(fields, now=NOW)
    except CommandError as exc:
        rejection = exc
    else:
        return None
    assert rejection.reason in REASONS
    assert isinstance(rejection.detail, str)
    return rejection.reason


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_as_body_only_raise_command_error(body: bytes) -> None:
    _decodes_or_rejects(entry(body))


@settings(max_examples=300)
@given(json_values)
def test_random_json_as_body_only_raises_command_error(value: Any) -> None:
    _decodes_or_rejects(entry(orjson.dumps(value)))


@settings(max_examples=500)
@given(command_like_bodies())
def test_command_shaped_bodies_only_raise_command_error(body: dict[str, Any]) -> None:
    _decodes_or_rejects(entry(body))


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.binary(max_size=8) | st.text(max_size=8),
        st.binary(max_size=40) | st.text(max_size=40) | st.integers() | st.none(),
        max_size=4,
    )
)
def test_random_entry_fields_only_raise_command_error(fields: dict[Any, Any]) -> None:
    _decodes_or_rejects(fields)
    with contextlib.suppress(CommandError):
        decode_event(fields)


@settings(max_examples=300)
@given(
    command_id=st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=128
    ),
    pos_ref_id=st.from_regex(r"\A[A-Za-z0-9_:.\-]{1,64}\Z"),
    amount=st.integers(min_value=1, max_value=MAX_CENTS),
    cashout=st.integers(min_value=0, max_value=MAX_CENTS),
    surcharge=st.integers(min_value=0, max_value=MAX_CENTS),
)
def test_valid_purchases_round_trip(
    command_id: str, pos_ref_id: str, amount: int, cashout: int, surcharge: int
) -> None:
    command = Purchase(
        command_id=command_id,
        pos_ref_id=pos_ref_id,
        amount_cents=amount,
        cashout_cents=cashout,
        surcharge_cents=surcharge,
    )
    assert command == decode_command(encode_command(command), now=NOW)


# --- raw stream entries: what XREADGROUP hands the lane, as field pairs -------------------

# Field values close to valid ones, then anything: edge times (the calendar's
# ends with extreme offsets), huge and negative numbers, odd text.
fuzzed_values = (
    plausible_values
    | st.sampled_from(
        [
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59.999999+00:00",
            "0001-01-01T00:00:00-00:01",
            "2025-02-30T00:00:00Z",
            "2030-01-01T24:00:00Z",
            "\ud800",
            "\x00",
        ]
    )
    | st.integers()
    | st.floats()
    | json_values
)


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> bytes:
    """A real command's body with some of its fields fuzzed, as JSON text (keys may repeat)."""
    kind = draw(st.sampled_from(sorted(COMMAND_TYPES)))
    specs = COMMAND_TYPES[kind].wire_fields
    pairs: list[tuple[str, Any]] = [("type", kind), ("command_id", "c1")]
    for spec in specs[1:]:
        if draw(st.booleans()):
            pairs.append((spec.name, draw(fuzzed_values)))
    if draw(st.integers(min_value=0, max_value=4)) == 0:  # a repeated or odd key
        pairs.insert(
            draw(st.integers(min_value=0, max_value=len(pairs))),
            (draw(field_names), draw(fuzzed_values)),
        )
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    return text.encode("utf-8", "surrogatepass")


entry_names = (
    st.sampled_from([b"v", b"body", "v", "body", b"V", b"body\x00", b"\xff", b"\xc3"])
    | st.binary(max_size=8)
    | st.text(max_size=8)
)
entry_values = (
    st.sampled_from([b"1", "1", b"2", b"", b"\xff"])
    | near_valid_bodies()
    | st.binary(max_size=60)
    | st.text(max_size=60)
    | json_values.map(orjson.dumps)
)


@st.composite
def raw_entries(draw: st.DrawFn) -> list[tuple[Any, Any]]:
    """An entry's field pairs: mostly v and body (valid or fuzzed), plus extras and repeats."""
    pairs: list[tuple[Any, Any]] = []
    if draw(st.booleans()):
        pairs.append((b"v", draw(st.sampled_from([b"1", b"1", b"2", "1"]))))
    if draw(st.integers(min_value=0, max_value=3)):
        pairs.append((b"body", draw(near_valid_bodies())))
    pairs.extend(draw(st.lists(st.tuples(entry_names, entry_values), max_size=3)))
    return draw(st.permutations(pairs))


@settings(max_examples=1000)
@given(raw_entries())
def test_raw_stream_entries_only_raise_command_error(pairs: list[tuple[Any, Any]]) -> None:
    _decodes_or_rejects(pairs)
    _decodes_or_rejects(dict(pairs))  # as a client that folds fields into a map reads it


@settings(max_examples=300)
@given(raw_entries())
def test_an_entry_that_repeats_a_field_is_a_bad_entry(pairs: list[tuple[Any, Any]]) -> None:
    twice = [(b"v", b"1"), (b"body", orjson.dumps({"type": "pair", "command_id": "c"})), *pairs]
    if any(isinstance(n, bytes | str) and n in ("v", "body", b"v", b"body") for n, _ in pairs):
        assert "bad_entry" == _decodes_or_rejects(twice)


@settings(max_examples=500)
@given(near_valid_bodies())
def test_fuzzed_command_bodies_only_raise_command_error(body: bytes) -> None:
    _decodes_or_rejects({b"v": b"1", b"body": body})


# --- repeated JSON keys --------------------------------------------------------------------


@st.composite
def json_texts(draw: st.DrawFn, depth: int = 0) -> tuple[str, bool]:
    """JSON text and whether some object in it repeats a key.

    Strings are written in any of JSON's spellings (escaped colons ``\\u003a``,
    ``\\u`` escapes of other characters, raw UTF-8), with colons, quotes and
    backslashes in keys and values, and optional whitespace around tokens: all
    the ways the quick colon count in the codec could be fooled.
    """
    space = draw(st.sampled_from(["", " ", "\n  "]))
    kind = draw(
        st.sampled_from(["object", "object", "array", "scalar"] if depth < 3 else ["scalar"])
    )
    if kind == "scalar":
        value = draw(json_scalars)
        return (_string(draw, value) if isinstance(value, str) else json.dumps(value)), False
    if kind == "array":
        items = draw(st.lists(json_texts(depth + 1), max_size=3))
        text = "[" + ",".join(space + t for t, _ in items) + space + "]"
        return text, any(d for _, d in items)
    keys = draw(st.lists(st.sampled_from(["a", "b", ":", "a:b", 'q"', "\\", "é", ""]), max_size=4))
    members = [(k, *draw(json_texts(depth + 1))) for k in keys]
    text = "{" + ",".join(f"{space}{_string(draw, k)}{space}:{space}{t}" for k, t, _ in members)
    repeated = len(set(keys)) < len(keys)
    return text + space + "}", repeated or any(d for _, _, d in members)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([":", "a:b", "\\u003a", "::", 'x":1,"y', "", "é:"])
    | st.text(max_size=8)
)


def _string(draw: st.DrawFn, text: str) -> str:
    """``text`` as a JSON string, in one of its many spellings."""
    written = json.dumps(text, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        written = written.replace(":", "\\u003a")
    if draw(st.booleans()):
        written = written.replace("a", "\\u0061")
    return written


@settings(max_examples=1000)
@given(json_texts(), st.booleans())
def test_a_repeated_key_anywhere_is_refused_and_only_then(
    text_and_repeat: tuple[str, bool], with_command: bool
) -> None:
    text, repeated = text_and_repeat
    if not text.startswith("{"):
        return
    if with_command:  # the same object inside a plausible command
        text = '{"type":"print","command_id":"c1","key":"k","payload":"p","x":' + text + "}"
    reason = _decodes_or_rejects({b"v": b"1", b"body": text.encode("utf-8", "surrogatepass")})
    if reason == "not_json":
        return  # lone surrogates and the like: refused before keys are looked at
    assert repeated == (reason == "duplicate_key"), text
