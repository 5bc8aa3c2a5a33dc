"""The preauthorisation, account verify and Zip commands: their field rules."""

from __future__ import annotations

from typing import Any

import pytest

from multipair.broker_schema import (
    COMMAND_TYPES,
    CommandKind,
    PreauthComplete,
    PreauthTopup,
    ZipPurchase,
    decode_command,
)
from multipair.exceptions import CommandError
from tests.broker_schema.helpers import NOW, entry

_PREAUTH_ID = "15272418"

GOOD: dict[str, dict[str, Any]] = {
    "account_verify": {"pos_ref_id": "v-1"},
    "preauth_open": {"pos_ref_id": "p-1", "amount_cents": 10000},
    "preauth_topup": {"pos_ref_id": "p-2", "preauth_id": _PREAUTH_ID, "amount_cents": 500},
    "preauth_partial_cancel": {
        "pos_ref_id": "p-3",
        "preauth_id": _PREAUTH_ID,
        "amount_cents": 250,
    },
    "preauth_extend": {"pos_ref_id": "p-4", "preauth_id": _PREAUTH_ID},
    "preauth_cancel": {"pos_ref_id": "p-5", "preauth_id": _PREAUTH_ID},
    "preauth_complete": {"pos_ref_id": "p-6", "preauth_id": _PREAUTH_ID, "amount_cents": 9000},
    "zip_purchase": {"pos_ref_id": "z-1", "amount_cents": 4500, "store_code": "s1"},
    "zip_refund": {"pos_ref_id": "z-2", "amount_cents": 4500, "original_receipt_number": "R1"},
}

WITH_PREAUTH_ID = sorted(k for k, v in GOOD.items() if "preauth_id" in v)
WITH_AMOUNT = sorted(k for k, v in GOOD.items() if "amount_cents" in v)


def _reason(kind: str, **changes: Any) -> str:
    body = {"type": kind, "command_id": "c1", **GOOD[kind], **changes}
    body = {k: v for k, v in body.items() if v is not ...}
    with pytest.raises(CommandError) as caught:
        decode_command(entry(body), now=NOW)
    return caught.value.reason


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_each_is_a_transaction_that_writes_a_record(kind: str) -> None:
    cls = COMMAND_TYPES[kind]
    assert (CommandKind.TRANSACTION, True) == (cls.kind, cls.records_tx)
    body = {"type": kind, "command_id": "c1", **GOOD[kind]}
    assert cls is type(decode_command(entry(body), now=NOW))


@pytest.mark.parametrize("kind", WITH_PREAUTH_ID)
def test_without_preauth_id_is_a_missing_field(kind: str) -> None:
    assert "missing_field" == _reason(kind, preauth_id=...)


@pytest.mark.parametrize("kind", WITH_PREAUTH_ID)
def test_null_preauth_id_is_a_wrong_type(kind: str) -> None:
    assert "wrong_type" == _reason(kind, preauth_id=None)


@pytest.mark.parametrize("bad", ["", "a b", "x" * 33, "caf\u00e9", "tab\there", 15272418], ids=repr)
def test_preauth_id_must_be_1_to_32_printable_ascii_without_spaces(bad: object) -> None:
    expected = "wrong_type" if isinstance(bad, int) else "invalid_value"
    assert expected == _reason("preauth_topup", preauth_id=bad)


def test_preauth_id_of_32_printable_characters_is_accepted() -> None:
    command = PreauthTopup(command_id="c1", pos_ref_id="p", preauth_id="!~" * 16, amount_cents=1)
    assert 32 == len(command.preauth_id)


@pytest.mark.parametrize("kind", WITH_AMOUNT)
@pytest.mark.parametrize("amount", [0, -1, 1_000_000_000])
def test_amount_out_of_range_is_an_invalid_value(kind: str, amount: int) -> None:
    assert "invalid_value" == _reason(kind, amount_cents=amount)


@pytest.mark.parametrize("kind", WITH_AMOUNT)
def test_amount_is_required(kind: str) -> None:
    assert "missing_field" == _reason(kind, amount_cents=...)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_pos_ref_id_is_required(kind: str) -> None:
    assert "missing_field" == _reason(kind, pos_ref_id=...)


def test_completion_surcharge_defaults_to_zero_and_may_not_be_negative() -> None:
    command = PreauthComplete(
        command_id="c1", pos_ref_id="p", preauth_id=_PREAUTH_ID, amount_cents=100
    )
    assert 0 == command.surcharge_cents
    assert "invalid_value" == _reason("preauth_complete", surcharge_cents=-1)


def test_extend_and_cancel_carry_no_amount() -> None:
    assert "unknown_field" == _reason("preauth_extend", amount_cents=100)
    assert "unknown_field" == _reason("preauth_cancel", amount_cents=100)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"store_code": ...}, "missing_field"),
        ({"store_code": ""}, "invalid_value"),
        ({"store_code": "s" * 65}, "invalid_value"),
        ({"store_code": "line\nbreak"}, "invalid_value"),
        ({"description": "d" * 257}, "invalid_value"),
        ({"description": "a\x00b"}, "invalid_value"),
        ({"description": 5}, "wrong_type"),
    ],
    ids=repr,
)
def test_zip_purchase_field_rules(changes: dict[str, Any], expected: str) -> None:
    assert expected == _reason("zip_purchase", **changes)


def test_zip_purchase_description_may_be_empty_or_256_characters() -> None:
    short = ZipPurchase(command_id="c1", pos_ref_id="z", amount_cents=1, store_code="s")
    long = ZipPurchase(
        command_id="c1", pos_ref_id="z", amount_cents=1, store_code="s" * 64, description="d" * 256
    )
    assert ("", 256) == (short.description, len(long.description))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"original_receipt_number": ...}, "missing_field"),
        ({"original_receipt_number": ""}, "invalid_value"),
        ({"original_receipt_number": "r" * 65}, "invalid_value"),
        ({"original_receipt_number": 42}, "wrong_type"),
    ],
    ids=repr,
)
def test_zip_refund_field_rules(changes: dict[str, Any], expected: str) -> None:
    assert expected == _reason("zip_refund", **changes)
