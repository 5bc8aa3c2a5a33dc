"""Property tests of the SPI core: round trips, tampering and parser robustness (§2, §3).

- Whatever text the POS encrypts decrypts to itself (§3.1); whatever a stamp
  encodes, :func:`decode_frame` gives back, in every generation (§2.4, §13.3).
- Any single-character change to ``enc`` or ``hmac`` of a valid frame is
  rejected (§3.2). A case flip in ``hmac`` is accepted only when the decoder
  compares case-insensitively, as a terminal should; a case flip in ``enc``
  changes the signed text and is always rejected.
- :func:`decode_frame` never raises, whatever it is fed (§2.6).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from multipair.spi.crypto import Secrets, aes_decrypt, aes_encrypt
from multipair.spi.envelope import (
    PLAIN_EVENTS,
    Generation,
    MessageStamp,
    Received,
    RejectedFrame,
    RejectReason,
    decode_frame,
    encode_frame,
    format_local_datetime,
    format_utc_datetime,
)

# Small enough that the file runs in a few seconds; CI may raise it with a profile.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -----------------------------------------------------------------------

key_hex = st.builds(
    lambda raw, upper: raw.hex().upper() if upper else raw.hex(),
    st.binary(min_size=32, max_size=32),
    st.booleans(),
)
secrets_st = st.builds(Secrets, enc_key=key_hex, hmac_key=key_hex)
# Text that can be UTF-8 encoded (no lone surrogates), as every JSON string on the wire.
wire_text = st.text(st.characters(codec="utf-8"), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson writes
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or infinity
    | wire_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(wire_text, children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(wire_text, json_values, max_size=5)
pos_ids = st.from_regex(r"[A-Za-z0-9]{1,16}", fullmatch=True)
events = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
encrypted_events = events.filter(lambda e: e not in PLAIN_EVENTS)
moments = st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False)

# Values a terminal might put where the decoder expects a field: scalars of the
# wrong type and numbers spelt as text, in any script.
# Superscript two and circled one are digits but not decimal; Arabic-Indic one is
# a decimal digit; one half is numeric but no digit.
numeric_text = st.text(st.sampled_from("0123456789\u00b2\u2460\u0661\u00bd"), min_size=1) | st.text(
    st.characters(categories=["Nd"]), min_size=1
)
odd_fields = json_values | numeric_text
json_integers = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_odd_fields = {
    name: odd_fields for name in ("id", "event", "data", "datetime", "conn_id", "pos_id")
} | {"pos_counter": json_integers | numeric_text | odd_fields}
# Mostly messages that pass the id/event/data checks, so the other fields get read too.
message_shaped = st.fixed_dictionaries(
    {"id": wire_text | json_integers, "event": events, "data": st.none() | json_objects},
    optional={name: _odd_fields[name] for name in ("datetime", "pos_counter", "conn_id", "pos_id")},
) | st.fixed_dictionaries({}, optional=_odd_fields)
envelope_shaped = st.fixed_dictionaries(
    {},
    optional={
        "message": message_shaped | json_values,
        "enc": st.text(st.sampled_from("0123456789abcdefABCDEF"), max_size=96) | json_values,
        "hmac": st.text(st.sampled_from("0123456789ABCDEF"), max_size=64) | json_values,
        "pos_id": json_values,
    },
)


def _assert_decodes_without_raising(frame: str | bytes, secrets: Secrets | None) -> None:
    for strict in (False, True):
        result = decode_frame(frame, secrets, strict_hmac_case=strict)
        assert isinstance(result, Received | RejectedFrame)


# --- round trips ----------------------------------------------------------------------


@FAST
@given(key=key_hex, text=st.text())
def test_aes_round_trip_gives_back_any_text(key: str, text: str) -> None:
    plaintext = text.encode("utf-8")
    ciphertext = aes_encrypt(key, plaintext)
    expected = (plaintext, 0)
    assert expected == (aes_decrypt(key, ciphertext), len(ciphertext) % 16)
    assert len(ciphertext) > len(plaintext)  # PKCS#7 always pads, by a full block if aligned


@THOROUGH
@given(
    generation=st.sampled_from(Generation),
    secrets=st.none() | secrets_st,
    pos_id=pos_ids,
    conn_id=st.none() | wire_text,
    counter=st.integers(min_value=0, max_value=2**31),
    message_id=wire_text,
    event=st.sampled_from(sorted(PLAIN_EVENTS)) | events,
    data=st.none() | json_objects,
    now=moments,
)
def test_stamped_message_decodes_to_what_was_encoded(
    generation: Generation,
    secrets: Secrets | None,
    pos_id: str,
    conn_id: str | None,
    counter: int,
    message_id: str,
    event: str,
    data: dict[str, Any] | None,
    now: float,
) -> None:
    stamp = MessageStamp(
        pos_id=pos_id, generation=generation, secrets=secrets, conn_id=conn_id, pos_counter=counter
    )
    frame = stamp.encode(message_id, event, data, now=now)
    encrypted = secrets is not None and event not in PLAIN_EVENTS
    v26 = generation is Generation.V26

    actual = decode_frame(frame, secrets, strict_hmac_case=True)

    assert isinstance(actual, Received), actual
    expected = {
        "id": message_id,
        "event": event,
        "data": data,
        "datetime": format_local_datetime(now) if v26 else format_utc_datetime(now),
        "pos_counter": None if v26 else counter,
        "conn_id": None if v26 else conn_id,
        # §13.3: 2.9 puts pos_id inside every message; 2.6 and 2.8 only inside plain ones.
        "pos_id": pos_id if generation is Generation.V29 or not encrypted else None,
        "encrypted": encrypted,
        "outer_pos_id": pos_id if encrypted else None,
    }
    message = actual.message
    assert expected == {
        "id": message.id,
        "event": message.event,
        "data": message.data,
        "datetime": message.datetime,
        "pos_counter": message.pos_counter,
        "conn_id": message.conn_id,
        "pos_id": message.pos_id,
        "encrypted": actual.encrypted,
        "outer_pos_id": actual.outer_pos_id,
    }
    assert counter + 1 == stamp.pos_counter


# --- tampering ------------------------------------------------------------------------


def _flip_one_letter(frame: dict[str, Any], field: str, position: int) -> None:
    """Swap the case of one letter of ``frame[field]``: the ``position``-th (wrapping).

    An example whose text has no letter is rejected (hypothesis ``assume``).
    """
    text: str = frame[field]
    letters = [i for i, char in enumerate(text) if char.isalpha()]
    assume(letters)
    index = letters[position % len(letters)]
    frame[field] = text[:index] + text[index].swapcase() + text[index + 1 :]


def _encrypted_frame(
    secrets: Secrets, generation: Generation, event: str, data: dict[str, Any] | None
) -> dict[str, Any]:
    stamp = MessageStamp(pos_id="POS1", generation=generation, secrets=secrets)
    frame: dict[str, Any] = orjson.loads(stamp.encode("m1", event, data, now=1_623_128_612.123))
    return frame


# Every code point, lone surrogates included (a str frame need not be valid UTF-8).
any_char = st.characters(exclude_categories=()) | st.characters(
    min_codepoint=0xD800, max_codepoint=0xDFFF
)
replacement_chars = st.sampled_from("0123456789abcdefABCDEF") | st.characters(codec="utf-8")


@THOROUGH
@given(
    secrets=secrets_st,
    generation=st.sampled_from(Generation),
    event=encrypted_events,
    data=st.none() | json_objects,
    field=st.sampled_from(["enc", "hmac"]),
    strict=st.booleans(),
    position=st.integers(min_value=0),
    replacement=replacement_chars,
)
def test_any_single_character_change_to_enc_or_hmac_is_rejected(
    secrets: Secrets,
    generation: Generation,
    event: str,
    data: dict[str, Any] | None,
    field: str,
    strict: bool,
    position: int,
    replacement: str,
) -> None:
    frame = _encrypted_frame(secrets, generation, event, data)
    original: str = frame[field]
    index = position % len(original)
    assume(replacement != original[index])
    if field == "hmac" and not strict:
        # A terminal compares case-insensitively (§3.2): only a case flip is the same hmac.
        assume(replacement.upper() != original[index].upper())
    frame[field] = original[:index] + replacement + original[index + 1 :]

    actual = decode_frame(orjson.dumps(frame), secrets, strict_hmac_case=strict)

    assert isinstance(actual, RejectedFrame), (field, index, replacement)
    expected = (RejectReason.INVALID_SIGNATURE, True)
    assert expected == (actual.reason, actual.encrypted)


@FAST
@given(
    secrets=secrets_st,
    generation=st.sampled_from(Generation),
    event=encrypted_events,
    position=st.integers(min_value=0),
    strict=st.booleans(),
)
def test_case_flip_in_enc_is_rejected_because_the_hmac_covers_the_text(
    secrets: Secrets, generation: Generation, event: str, position: int, strict: bool
) -> None:
    frame = _encrypted_frame(secrets, generation, event, None)
    _flip_one_letter(frame, "enc", position)

    actual = decode_frame(orjson.dumps(frame), secrets, strict_hmac_case=strict)

    assert isinstance(actual, RejectedFrame)
    expected = RejectReason.INVALID_SIGNATURE
    assert expected == actual.reason


@FAST
@given(
    secrets=secrets_st,
    generation=st.sampled_from(Generation),
    event=encrypted_events,
    position=st.integers(min_value=0),
)
def test_case_flip_in_hmac_is_rejected_only_under_strict_case(
    secrets: Secrets, generation: Generation, event: str, position: int
) -> None:
    frame = _encrypted_frame(secrets, generation, event, None)
    mac: str = frame["hmac"]
    _flip_one_letter(frame, "hmac", position)
    flipped = orjson.dumps(frame)

    strict = decode_frame(flipped, secrets, strict_hmac_case=True)
    lenient = decode_frame(flipped, secrets, strict_hmac_case=False)

    assert isinstance(strict, RejectedFrame)
    assert isinstance(lenient, Received)
    expected = (RejectReason.INVALID_SIGNATURE, mac)
    assert expected == (strict.reason, lenient.hmac)


# --- robustness: decode_frame never raises ------------------------------------------------


@FAST
@given(frame=st.binary(max_size=300), secrets=st.none() | secrets_st)
@example(frame=b"\xff" * 20, secrets=None)
@example(frame=b"[" * 5000, secrets=None)  # deeper than any JSON parser's recursion limit
def test_random_bytes_never_make_decode_frame_raise(frame: bytes, secrets: Secrets | None) -> None:
    _assert_decodes_without_raising(frame, secrets)


@FAST
@given(
    frame=st.text(any_char | st.sampled_from('{}[]":,0eE'), max_size=300),
    secrets=st.none() | secrets_st,
)
@example(frame="\ud800", secrets=None)
@example(frame='{"enc": "\ud800", "hmac": "00"}', secrets=None)
def test_random_text_never_makes_decode_frame_raise(frame: str, secrets: Secrets | None) -> None:
    _assert_decodes_without_raising(frame, secrets)


@THOROUGH
@given(document=json_values | envelope_shaped, secrets=st.none() | secrets_st)
def test_random_json_never_makes_decode_frame_raise(document: Any, secrets: Secrets | None) -> None:
    frame = orjson.dumps(document)
    _assert_decodes_without_raising(frame, secrets)
    _assert_decodes_without_raising(frame.decode("utf-8"), secrets)


@THOROUGH
@given(
    inner=st.binary(max_size=200) | json_values.map(orjson.dumps),
    secrets=secrets_st,
    upper_enc=st.booleans(),
)
def test_validly_signed_garbage_never_makes_decode_frame_raise(
    inner: bytes, secrets: Secrets, upper_enc: bool
) -> None:
    """A peer holding the keys can sign anything: decryption paths must not raise either."""
    frame = encode_frame(inner, secrets=secrets, outer_pos_id="POS1", upper_enc=upper_enc)
    _assert_decodes_without_raising(frame, secrets)


@THOROUGH
@given(message=message_shaped | json_values, secrets=secrets_st)
def test_validly_signed_message_of_any_shape_never_makes_decode_frame_raise(
    message: Any, secrets: Secrets
) -> None:
    document = {"message": message}
    inner = orjson.dumps(document)
    frame = encode_frame(inner, secrets=secrets, outer_pos_id="POS1")
    _assert_decodes_without_raising(frame, secrets)


@pytest.mark.parametrize("counter", ["\u00b2", "\u2460", "1" * 5000])
def test_pos_counter_text_that_is_not_plain_ascii_digits_is_ignored(
    counter: str,
) -> None:
    frame = orjson.dumps({"message": {"id": "1", "event": "pong", "pos_counter": counter}})
    _assert_decodes_without_raising(frame, None)


def test_non_ascii_hmac_is_rejected_even_where_it_upper_cases_to_hex() -> None:
    secrets = Secrets(enc_key="11" * 32, hmac_key="22" * 32)
    for n in range(1000):
        frame = _encrypted_frame(secrets, Generation.V29, f"ping{n}", None)
        if "FF" in frame["hmac"]:
            break
    else:
        pytest.fail("no hmac with 'FF' found")  # not an AssertionError: would not xfail
    frame["hmac"] = frame["hmac"].replace("FF", "\ufb00", 1)

    actual = decode_frame(orjson.dumps(frame), secrets, strict_hmac_case=False)

    assert isinstance(actual, RejectedFrame)
