"""Property tests: no input makes decode_command raise anything but CommandError."""

from __future__ import annotations

import contextlib
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


def _decodes_or_rejects(fields: Any) -> None:
    """Decode; a rejection must be a CommandError with a documented reason and a detail."""
    try:
        decode_command(fields, now=NOW)
    except CommandError as exc:
        rejection = exc
    else:
        return
    assert rejection.reason in REASONS
    assert isinstance(rejection.detail, str)


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
