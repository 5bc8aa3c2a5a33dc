"""decode_command: every bad entry gets its precise reason; every good one round-trips."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import orjson
import pytest

from multipair.broker_schema import (
    COMMAND_TYPES,
    MAX_BODY_BYTES,
    MAX_CENTS,
    Command,
    CommandHint,
    CommandKind,
    Purchase,
    Reason,
    decode_command,
    encode_command,
    peek_command,
)
from multipair.exceptions import CommandError
from tests.broker_schema.helpers import NOW, entry, purchase


def _reason(fields: Any) -> str:
    with pytest.raises(CommandError) as caught:
        decode_command(fields, now=NOW)
    return caught.value.reason


def _padded_print(total_bytes: int) -> bytes:
    """A valid ``print`` body of exactly ``total_bytes`` bytes."""
    head = b'{"type":"print","command_id":"c1","key":"k","payload":"'
    tail = b'"}'
    return head + b"x" * (total_bytes - len(head) - len(tail)) + tail


BAD_ENTRIES: list[tuple[str, Any, str]] = [
    # The entry itself.
    ("entry is not a mapping", [(b"v", b"1")], "bad_entry"),
    ("entry without v", {b"body": b"{}"}, "bad_entry"),
    ("entry without body", {b"v": b"1"}, "bad_entry"),
    ("entry with a third field", {**entry(purchase()), b"trace": b"x"}, "bad_entry"),
    ("entry field name not UTF-8", {b"v": b"1", b"\xff": b"{}"}, "bad_entry"),
    (
        "entry field name not UTF-8 beside v and body",
        [(b"v", b"1"), (b"body", b"{}"), (b"\xff", b"1")],
        "bad_entry",
    ),
    # Repeats: a client that folds fields into a map keeps the last, so the lane
    # reads an entry's field pairs as sent and the codec refuses a repeat.
    (
        "v twice (v 2 body <purchase> v 1)",
        [(b"v", b"2"), (b"body", orjson.dumps(purchase())), (b"v", b"1")],
        "bad_entry",
    ),
    (
        "body twice (v 1 body <cancel> body <purchase>)",
        [
            (b"v", b"1"),
            (b"body", orjson.dumps({"type": "cancel", "command_id": "c1"})),
            (b"body", orjson.dumps(purchase())),
        ],
        "bad_entry",
    ),
    (
        "v as bytes and as text",
        {b"v": b"1", "v": "1", b"body": orjson.dumps(purchase())},
        "bad_entry",
    ),
    ("pairs of three", [(b"v", b"1", b"x"), (b"body", b"{}", b"x")], "bad_entry"),
    ("entry as one text", "v 1 body {}", "bad_entry"),
    ("entry as bytes", b"v1body{}", "bad_entry"),
    ("body of a wrong Python type", {b"v": b"1", b"body": 5}, "bad_entry"),
    # The version.
    ("unknown v 2", entry(purchase(), v=b"2"), "unsupported_version"),
    ("v 01", entry(purchase(), v=b"01"), "unsupported_version"),
    ("empty v", entry(purchase(), v=b""), "unsupported_version"),
    ("v not UTF-8", entry(purchase(), v=b"\xff"), "bad_entry"),
    # Size, JSON and shape.
    ("oversize body", entry(_padded_print(MAX_BODY_BYTES + 1)), "oversize"),
    ("body not JSON", entry(b"{"), "not_json"),
    ("empty body", entry(b""), "not_json"),
    ("body not UTF-8", entry(b'{"type":"\xff"}'), "not_json"),
    ("body with a BOM", entry(b"\xef\xbb\xbf{}"), "not_json"),
    ("body with NaN", entry(b'{"type":"purchase","amount_cents":NaN}'), "not_json"),
    ("body nested too deep", entry(b"[" * 2000 + b"]" * 2000), "not_json"),
    ("body is an array", entry(b"[1,2]"), "not_an_object"),
    ("body is null", entry(b"null"), "not_an_object"),
    ("body is a number", entry(b"1250"), "not_an_object"),
    ("body is a string", entry(b'"purchase"'), "not_an_object"),
    # Repeated JSON keys: orjson keeps the last, so 26682 would be read as 7083.
    (
        "amount_cents twice",
        entry(
            b'{"type":"purchase","command_id":"c1","pos_ref_id":"r",'
            b'"amount_cents":26682,"amount_cents":7083}'
        ),
        "duplicate_key",
    ),
    (
        "type twice",
        entry(b'{"type":"cancel","command_id":"c1","type":"purchase"}'),
        "duplicate_key",
    ),
    (
        "a key repeated with an escape",
        entry(b'{"type":"cancel","command_id":"c1","comm\\u0061nd_id":"c2"}'),
        "duplicate_key",
    ),
    (
        "a repeat that hides a colon",
        entry(b'{"type":"cancel","command_id":"c:1","command_id":"c\\u003a2"}'),
        "duplicate_key",
    ),
    (
        "a key repeated in a nested object",
        entry(b'{"type":"cancel","command_id":"c1","x":{"a":1,"a":2}}'),
        "duplicate_key",
    ),
    (
        "a repeat and an unknown field",
        entry(b'{"type":"purchase","amout_cents":1,"amout_cents":2}'),
        "duplicate_key",
    ),
    # The type.
    ("no type", entry(purchase(type=...)), "missing_field"),
    ("type is a number", entry(purchase(type=5)), "wrong_type"),
    ("type is null", entry(purchase(type=None)), "wrong_type"),
    ("unknown type", entry(purchase(type="teleport")), "unknown_type"),
    ("type in upper case", entry(purchase(type="PURCHASE")), "unknown_type"),
    ("preauth is not in v1", entry(purchase(type="preauth")), "unknown_type"),
    # Unknown and missing fields.
    ("misspelt amount field", entry(purchase(amout_cents=100)), "unknown_field"),
    ("field of another command", entry(purchase(auth_code="123456")), "unknown_field"),
    (
        "amount on a cancel",
        entry({"type": "cancel", "command_id": "c", "amount_cents": 1}),
        "unknown_field",
    ),
    ("no command_id", entry(purchase(command_id=...)), "missing_field"),
    ("no pos_ref_id", entry(purchase(pos_ref_id=...)), "missing_field"),
    ("no amount_cents", entry(purchase(amount_cents=...)), "missing_field"),
    (
        "get_transaction without pos_ref_id",
        entry({"type": "get_transaction", "command_id": "c"}),
        "missing_field",
    ),
    (
        "print without key",
        entry({"type": "print", "command_id": "c", "payload": "x"}),
        "missing_field",
    ),
    (
        "auth_code without the code",
        entry({"type": "auth_code", "command_id": "c"}),
        "missing_field",
    ),
    # Money.
    ("string cents", entry(purchase(amount_cents="1250")), "wrong_type"),
    ("float cents", entry(purchase(amount_cents=12.5)), "wrong_type"),
    (
        "integral float cents",
        entry(b'{"type":"purchase","command_id":"c1","pos_ref_id":"r","amount_cents":1250.0}'),
        "wrong_type",
    ),
    (
        "exponent cents",
        entry(b'{"type":"purchase","command_id":"c1","pos_ref_id":"r","amount_cents":1e3}'),
        "wrong_type",
    ),
    (
        "cents beyond 64 bits",
        entry(
            b'{"type":"purchase","command_id":"c1","pos_ref_id":"r","amount_cents":99999999999999999999999}'
        ),
        "wrong_type",
    ),
    ("bool cents", entry(purchase(amount_cents=True)), "wrong_type"),
    ("null cents", entry(purchase(amount_cents=None)), "wrong_type"),
    ("list cents", entry(purchase(amount_cents=[1250])), "wrong_type"),
    ("object cents", entry(purchase(amount_cents={"cents": 1250})), "wrong_type"),
    ("zero cents", entry(purchase(amount_cents=0)), "invalid_value"),
    (
        "minus zero cents",
        entry(b'{"type":"purchase","command_id":"c1","pos_ref_id":"r","amount_cents":-0}'),
        "invalid_value",
    ),
    ("negative cents", entry(purchase(amount_cents=-1250)), "invalid_value"),
    ("too many cents", entry(purchase(amount_cents=MAX_CENTS + 1)), "invalid_value"),
    ("negative tip", entry(purchase(tip_cents=-1)), "invalid_value"),
    ("float tip", entry(purchase(tip_cents=1.5)), "wrong_type"),
    ("bool surcharge", entry(purchase(surcharge_cents=False)), "wrong_type"),
    ("null command_id", entry(purchase(command_id=None)), "wrong_type"),
    ("null pos_ref_id on a purchase", entry(purchase(pos_ref_id=None)), "wrong_type"),
    (
        "negative refund",
        entry({"type": "refund", "command_id": "c", "pos_ref_id": "r", "amount_cents": -5}),
        "invalid_value",
    ),
    (
        "zero cashout",
        entry({"type": "cashout", "command_id": "c", "pos_ref_id": "r", "amount_cents": 0}),
        "invalid_value",
    ),
    (
        "string moto amount",
        entry({"type": "moto_purchase", "command_id": "c", "pos_ref_id": "r", "amount_cents": "5"}),
        "wrong_type",
    ),
    ("tip with cashout", entry(purchase(tip_cents=100, cashout_cents=100)), "invalid_value"),
    (
        "tip with prompt for cashout",
        entry(purchase(tip_cents=100, prompt_for_cashout=True)),
        "invalid_value",
    ),
    ("prompt_for_cashout as text", entry(purchase(prompt_for_cashout="yes")), "wrong_type"),
    ("prompt_for_cashout as 1", entry(purchase(prompt_for_cashout=1)), "wrong_type"),
    # command_id.
    ("empty command_id", entry(purchase(command_id="")), "invalid_value"),
    ("command_id of 129 characters", entry(purchase(command_id="c" * 129)), "invalid_value"),
    ("command_id with a newline", entry(purchase(command_id="c1\n")), "invalid_value"),
    ("command_id with a control character", entry(purchase(command_id="c\x001")), "invalid_value"),
    ("command_id as a number", entry(purchase(command_id=17)), "wrong_type"),
    # pos_ref_id.
    ("empty pos_ref_id", entry(purchase(pos_ref_id="")), "invalid_value"),
    ("pos_ref_id with a space", entry(purchase(pos_ref_id="order 17")), "invalid_value"),
    ("pos_ref_id not ASCII", entry(purchase(pos_ref_id="ordér-17")), "invalid_value"),
    ("pos_ref_id of 65 characters", entry(purchase(pos_ref_id="r" * 65)), "invalid_value"),
    ("pos_ref_id with a brace", entry(purchase(pos_ref_id="{order}")), "invalid_value"),
    (
        "pos_ref_id with a trailing newline",
        entry(purchase(pos_ref_id="order-17\n")),
        "invalid_value",
    ),
    ("pos_ref_id as a number", entry(purchase(pos_ref_id=17)), "wrong_type"),
    (
        "bad pos_ref_id on a cancel",
        entry({"type": "cancel", "command_id": "c", "pos_ref_id": "a b"}),
        "invalid_value",
    ),
    # expires_at.
    ("expired", entry(purchase(expires_at="2025-01-31T09:29:59Z")), "expired"),
    ("expiring this very instant", entry(purchase(expires_at="2025-01-31T09:30:00Z")), "expired"),
    (
        "expired, written with an offset",
        entry(purchase(expires_at="2025-01-31T20:29:59+11:00")),
        "expired",
    ),
    (
        "expires_at without an offset",
        entry(purchase(expires_at="2030-01-01T00:00:00")),
        "invalid_value",
    ),
    ("expires_at not a time", entry(purchase(expires_at="tomorrow")), "invalid_value"),
    ("expires_at as epoch seconds", entry(purchase(expires_at=1893456000)), "wrong_type"),
    ("expires_at as a date only", entry(purchase(expires_at="2030-01-01")), "invalid_value"),
    (
        "expires_at after year 9999 in UTC",
        entry(purchase(expires_at="9999-12-31T23:59:59-23:59")),
        "invalid_value",
    ),
    (
        "expires_at before year 1 in UTC",
        entry(purchase(expires_at="0001-01-01T00:00:00+01:00")),
        "invalid_value",
    ),
    # Other fields.
    (
        "auth code of 5 digits",
        entry({"type": "auth_code", "command_id": "c", "auth_code": "12345"}),
        "invalid_value",
    ),
    (
        "auth code with a symbol",
        entry({"type": "auth_code", "command_id": "c", "auth_code": "12345!"}),
        "invalid_value",
    ),
    (
        "auth code as a number",
        entry({"type": "auth_code", "command_id": "c", "auth_code": 123456}),
        "wrong_type",
    ),
    (
        "confirmation code not hex",
        entry({"type": "pair_confirm", "command_id": "c", "confirmation_code": "XYZ123"}),
        "invalid_value",
    ),
    (
        "empty print payload",
        entry({"type": "print", "command_id": "c", "key": "k", "payload": ""}),
        "invalid_value",
    ),
    (
        "empty print key",
        entry({"type": "print", "command_id": "c", "key": "", "payload": "x"}),
        "invalid_value",
    ),
    (
        "set_config with nothing to set",
        entry({"type": "set_config", "command_id": "c"}),
        "invalid_value",
    ),
    (
        "set_config option as text",
        entry({"type": "set_config", "command_id": "c", "print_merchant_copy": "true"}),
        "wrong_type",
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [pytest.param(fields, reason, id=name) for name, fields, reason in BAD_ENTRIES],
)
def test_bad_entry_is_rejected_with_its_reason(fields: Any, expected: str) -> None:
    assert expected == _reason(fields)


def test_every_reason_in_the_table_is_a_documented_reason() -> None:
    assert {reason for _, _, reason in BAD_ENTRIES} <= {r.value for r in Reason}


def test_rejection_detail_names_the_field_and_the_bad_value() -> None:
    with pytest.raises(CommandError) as caught:
        decode_command(entry(purchase(amount_cents=12.5)), now=NOW)
    assert "amount_cents must be an integer number of cents, got 12.5" == caught.value.detail


def test_unknown_field_detail_names_the_field() -> None:
    with pytest.raises(CommandError) as caught:
        decode_command(entry(purchase(amout_cents=100)), now=NOW)
    assert "command 'purchase' has no field 'amout_cents'" == caught.value.detail


def test_body_of_exactly_the_size_limit_is_accepted() -> None:
    command = decode_command(entry(_padded_print(MAX_BODY_BYTES)), now=NOW)
    assert "print" == command.type


def test_text_fields_are_read_like_bytes() -> None:
    fields = {"v": "1", "body": orjson.dumps(purchase()).decode()}
    assert decode_command(entry(purchase()), now=NOW) == decode_command(fields, now=NOW)


def test_command_with_future_expiry_is_accepted_and_kept_in_utc() -> None:
    command = decode_command(entry(purchase(expires_at="2025-01-31T20:31:00+11:00")), now=NOW)
    assert dt.datetime(2025, 1, 31, 9, 31, tzinfo=dt.UTC) == command.expires_at


def test_command_expires_while_it_waits_in_the_queue() -> None:
    command = decode_command(entry(purchase(expires_at="2025-01-31T09:31:00Z")), now=NOW)
    with pytest.raises(CommandError) as caught:
        command.check_not_expired(NOW + dt.timedelta(minutes=1))
    assert "expired" == caught.value.reason


def test_explicit_null_of_an_optional_field_means_its_default() -> None:
    body = {"type": "cancel", "command_id": "c", "pos_ref_id": None, "expires_at": None}
    command = decode_command(entry(body), now=NOW)
    assert (None, None) == (command.pos_ref_id, command.expires_at)  # type: ignore[attr-defined]


def test_null_money_and_flags_of_a_purchase_mean_their_defaults() -> None:
    body = purchase(
        tip_cents=None, surcharge_cents=None, cashout_cents=None, prompt_for_cashout=None
    )
    assert Purchase(command_id="c1", pos_ref_id="order-17", amount_cents=1250) == (
        decode_command(entry(body), now=NOW)
    )


def test_expiry_past_the_calendar_is_refused_when_built_in_python_too() -> None:
    late = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(-dt.timedelta(hours=23)))
    with pytest.raises(CommandError) as caught:
        Purchase(command_id="c1", pos_ref_id="r", amount_cents=1, expires_at=late)
    assert "invalid_value" == caught.value.reason


def test_an_entry_as_field_pairs_decodes_like_the_same_entry_as_a_map() -> None:
    as_map = entry(purchase())
    assert decode_command(as_map, now=NOW) == decode_command(list(as_map.items()), now=NOW)
    assert decode_command(as_map, now=NOW) == (
        decode_command([[b"body", as_map[b"body"]], [b"v", b"1"]], now=NOW)
    )


def test_a_repeated_entry_field_is_named_in_the_detail() -> None:
    with pytest.raises(CommandError) as caught:
        decode_command([(b"v", b"1"), (b"body", b"{}"), (b"body", b"{}")], now=NOW)
    assert "a stream entry has one 'body' field, not two" in caught.value.detail


def test_a_repeated_key_is_named_in_the_detail() -> None:
    body = b'{"type":"purchase","amount_cents":26682,"amount_cents":7083}'
    with pytest.raises(CommandError) as caught:
        decode_command(entry(body), now=NOW)
    assert ("duplicate_key", True) == (
        caught.value.reason,
        caught.value.detail.startswith("body has the key 'amount_cents' twice"),
    )


@pytest.mark.parametrize(
    "body",
    [
        purchase(pos_ref_id="a:b:c", expires_at="2030-01-01T00:00:00+10:00"),
        {"type": "print", "command_id": "c:1", "key": "k:", "payload": "a: b: c\\u003a"},
        {"type": "print", "command_id": "c1", "key": "k", "payload": '"quoted": yes'},
        {"type": "cancel", "command_id": "\u00e9t\u00e9:1"},
    ],
)
def test_colons_and_escapes_inside_strings_are_not_repeats(body: dict[str, Any]) -> None:
    decode_command(entry(body), now=NOW)
    decode_command(entry(json.dumps(body, indent=2).encode()), now=NOW)  # spaced out


@pytest.mark.parametrize("kind", sorted(COMMAND_TYPES))
def test_null_means_the_default_for_every_optional_field(kind: str) -> None:
    """A ``null`` optional field decodes exactly as if the field were left out."""
    for spec in COMMAND_TYPES[kind].wire_fields:
        if spec.required:
            continue
        body = {"type": kind, "command_id": "c1", **GOOD_BODIES[kind]}
        left_out = {k: v for k, v in body.items() if k != spec.name}
        assert _outcome(entry(left_out)) == _outcome(entry({**body, spec.name: None})), spec.name


def _outcome(fields: Any) -> object:
    try:
        return decode_command(fields, now=NOW)
    except CommandError as exc:
        return exc.reason


# --- good entries: one per command type ------------------------------------------------------

GOOD_BODIES: dict[str, dict[str, Any]] = {
    "pair": {},
    "pair_confirm": {"confirmation_code": "75B56F"},
    "pair_cancel": {"pair_command_id": "c-pair-1"},
    "unpair": {},
    "purchase": {
        "pos_ref_id": "purchase-2025-01-31T09:30:00.000Z",
        "amount_cents": 1250,
        "cashout_cents": 2000,
        "surcharge_cents": 25,
        "prompt_for_cashout": True,
    },
    "refund": {"pos_ref_id": "refund-1", "amount_cents": 500, "suppress_merchant_password": True},
    "cashout": {"pos_ref_id": "cash:3", "amount_cents": 5000, "surcharge_cents": 0},
    "moto_purchase": {"pos_ref_id": "moto.9", "amount_cents": MAX_CENTS},
    "cancel": {"pos_ref_id": "order-17"},
    "signature_accept": {"pos_ref_id": "order-17"},
    "signature_decline": {},
    "auth_code": {"auth_code": "A1B2C3"},
    "get_transaction": {"pos_ref_id": "order-17"},
    "get_last_transaction": {},
    "settle": {"pos_ref_id": "settle-1"},
    "settlement_enquiry": {},
    "reversal": {"pos_ref_id": "order-17"},
    "terminal_status": {},
    "terminal_configuration": {},
    "print": {"key": "receipt-17", "payload": "Thank you\r\nCome again"},
    "set_config": {"print_merchant_copy": True, "signature_flow_on_eftpos": False},
    # preauthorisation and zip
    "account_verify": {"pos_ref_id": "verify-1"},
    "preauth_open": {"pos_ref_id": "pa-open-1", "amount_cents": 10000},
    "preauth_topup": {"pos_ref_id": "pa-top-1", "preauth_id": "15272418", "amount_cents": 500},
    "preauth_partial_cancel": {
        "pos_ref_id": "pa-pc-1",
        "preauth_id": "15272418",
        "amount_cents": 250,
    },
    "preauth_extend": {"pos_ref_id": "pa-ext-1", "preauth_id": "15272418"},
    "preauth_cancel": {"pos_ref_id": "pa-cxl-1", "preauth_id": "15272418"},
    "preauth_complete": {
        "pos_ref_id": "pa-comp-1",
        "preauth_id": "15272418",
        "amount_cents": 9000,
        "surcharge_cents": 90,
    },
    "zip_purchase": {
        "pos_ref_id": "zip-1",
        "amount_cents": 4500,
        "store_code": "store-7",
        "description": "2 x coffee",
    },
    "zip_refund": {"pos_ref_id": "zipr-1", "amount_cents": 4500, "original_receipt_number": "R42"},
    # pay at table
    "set_table_config": {"enabled": True, "operator_ids": ["7", "12"], "answer_timeout_ms": 5000},
    "bill_details": {
        "request_id": "r1",
        "bill_id": "b1",
        "total_cents": 5000,
        "outstanding_cents": 0,
    },
    "open_tables": {"request_id": "r2", "tables": [{"table_id": "12", "outstanding_cents": 1}]},
}


def test_every_command_type_has_a_good_example() -> None:
    assert set(COMMAND_TYPES) == set(GOOD_BODIES)


@pytest.mark.parametrize("kind", sorted(GOOD_BODIES))
def test_good_command_decodes_with_its_fields(kind: str) -> None:
    body = {"type": kind, "command_id": f"cmd-{kind}", **GOOD_BODIES[kind]}
    command = decode_command(entry(body), now=NOW)
    assert (COMMAND_TYPES[kind], f"cmd-{kind}") == (type(command), command.command_id)
    for name, value in GOOD_BODIES[kind].items():
        got = getattr(command, name)
        assert value == (list(got) if isinstance(got, tuple) else got)  # JSON lists: tuples


@pytest.mark.parametrize("kind", sorted(GOOD_BODIES))
def test_good_command_round_trips_through_a_stream_entry(kind: str) -> None:
    body = {
        "type": kind,
        "command_id": f"cmd-{kind}",
        "expires_at": "2030-01-01T00:00:00.125Z",
        **GOOD_BODIES[kind],
    }
    command = decode_command(entry(body), now=NOW)
    fields = encode_command(command)
    assert (b"1", command) == (fields["v"], decode_command(fields, now=NOW))


def test_encoded_command_puts_type_first_and_leaves_out_nulls() -> None:
    command = Purchase(command_id="c1", pos_ref_id="order-17", amount_cents=1250)
    body = orjson.loads(encode_command(command)["body"])
    assert ["type", "command_id", "pos_ref_id", "amount_cents"] == list(body)[:4]
    assert "expires_at" not in body


def test_commands_built_in_python_are_validated_too() -> None:
    with pytest.raises(CommandError) as caught:
        Purchase(command_id="c1", pos_ref_id="order-17", amount_cents=12.5)  # type: ignore[arg-type]
    assert "wrong_type" == caught.value.reason


def test_command_without_aware_expiry_is_refused() -> None:
    with pytest.raises(CommandError) as caught:
        Purchase(
            command_id="c1",
            pos_ref_id="r",
            amount_cents=1,
            expires_at=dt.datetime(2030, 1, 1),
        )
    assert "wrong_type" == caught.value.reason


def test_commands_are_frozen() -> None:
    command = Purchase(command_id="c1", pos_ref_id="r", amount_cents=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.amount_cents = 2  # type: ignore[misc]


# --- kinds -----------------------------------------------------------------------------------


def test_control_commands_are_exactly_those_that_act_at_once() -> None:
    control = {t for t, c in COMMAND_TYPES.items() if c.kind is CommandKind.CONTROL}
    assert {
        "pair_confirm",
        "pair_cancel",
        "cancel",
        "signature_accept",
        "signature_decline",
        "auth_code",
        "terminal_status",
        "terminal_configuration",
        "bill_details",
        "open_tables",
    } == control


def test_money_moving_commands_write_a_transaction_record() -> None:
    assert {
        "purchase",
        "refund",
        "cashout",
        "moto_purchase",
        "account_verify",
        "preauth_open",
        "preauth_topup",
        "preauth_partial_cancel",
        "preauth_extend",
        "preauth_cancel",
        "preauth_complete",
        "zip_purchase",
        "zip_refund",
    } == {t for t, c in COMMAND_TYPES.items() if c.records_tx}


def test_every_command_that_writes_a_record_requires_a_pos_ref_id() -> None:
    for cls in COMMAND_TYPES.values():
        if cls.records_tx:
            spec = next(s for s in cls.wire_fields if s.name == "pos_ref_id")
            assert (True, False) == (spec.required, spec.nullable), cls.type


def test_every_command_class_is_registered_under_its_type() -> None:
    assert all(issubclass(c, Command) and c.type == t for t, c in COMMAND_TYPES.items())


# --- peek ------------------------------------------------------------------------------------


def test_peek_reads_ids_of_a_command_that_is_otherwise_invalid() -> None:
    fields = entry(purchase(amount_cents=-1, command_id="c-9", pos_ref_id="order-9"))
    assert CommandHint(command_id="c-9", command_type="purchase", pos_ref_id="order-9") == (
        peek_command(fields)
    )


@pytest.mark.parametrize(
    "fields",
    [
        entry(b"{"),
        {b"v": b"2", b"body": b"{}"},
        entry(purchase(command_id="x" * 200, type="nope", pos_ref_id="a b")),
        "not even a mapping",
    ],
)
def test_peek_gives_nothing_it_cannot_trust(fields: Any) -> None:
    assert CommandHint() == peek_command(fields)


def test_peek_reads_only_the_keys_a_body_with_repeats_names_once() -> None:
    body = b'{"type":"purchase","command_id":"c-1","command_id":"c-2","amount_cents":1}'
    assert CommandHint(command_type="purchase") == peek_command(entry(body))
    body = (
        b'{"type":"purchase","command_id":"c-1","pos_ref_id":"r","amount_cents":1,"amount_cents":2}'
    )
    assert CommandHint(command_id="c-1", command_type="purchase", pos_ref_id="r") == (
        peek_command(entry(body))
    )
