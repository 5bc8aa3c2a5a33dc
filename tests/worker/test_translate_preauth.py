"""translate: preauthorisation, account verify and Zip commands to requests, answers to fields.

Pure: no Redis, no terminal. The balances follow the PROTOCOL.md §7.16 table;
the terminal's fixtures (shared/spi/fixtures) are read in place.
"""

from __future__ import annotations

from typing import Any

import pytest

from multipair import broker_schema as bs
from multipair.spi import messages as m
from multipair.spi.envelope import Message
from multipair.store.transactions import TxRecord
from multipair.worker.translate import TX_TYPES, amounts, spi_request, tx_fields
from tests.spi_shared import load_fixture

PID = "15765372"


def _response(event: str, **fields: Any) -> m.TransactionResponse:
    return m.TransactionResponse(id="1", event=event, success=True, **fields)


def _fixture(name: str) -> m.TransactionResponse:
    inner = load_fixture(name)["message"]
    parsed = m.parse_terminal_message(
        Message(id=str(inner["id"]), event=inner["event"], data=inner.get("data"))
    )
    assert isinstance(parsed, m.TransactionResponse)
    return parsed


# (command type, response, main amount, balance before, balance after)
TABLE: list[tuple[str, m.TransactionResponse, int | None, int | None, int | None]] = [
    (
        "preauth_open",
        _response(
            "preauth_response", transaction_type="PRE-AUTH", preauth_id=PID, preauth_amount=1000
        ),
        1000,
        0,
        1000,
    ),
    (
        "preauth_topup",
        _response(
            "preauth_topup_response",
            transaction_type="TOPUP",
            preauth_id=PID,
            topup_amount=200,
            existing_preauth_amount=1000,
            balance_amount=1200,
        ),
        200,
        1000,
        1200,
    ),
    (
        "preauth_partial_cancel",
        _response(
            "preauth_partial_cancellation_response",
            transaction_type="CANCEL",
            preauth_id=PID,
            preauth_cancel_amount=300,
            existing_preauth_amount=1200,
            balance_amount=900,
        ),
        300,
        1200,
        900,
    ),
    (
        "preauth_extend",
        _response(
            "preauth_extend_response",
            transaction_type="PRE-AUTH EXT",
            preauth_id=PID,
            existing_preauth_amount=900,
            balance_amount=900,
        ),
        None,
        900,
        900,
    ),
    (
        "preauth_cancel",
        _response(
            "preauth_cancellation_response",
            transaction_type="PRE-AUTH CANCEL",
            preauth_id=PID,
            preauth_amount=900,
        ),
        900,
        900,
        0,
    ),
    (
        "preauth_complete",
        _response(
            "completion_response",
            transaction_type="PCOMP",
            preauth_id=PID,
            completion_amount=900,
            surcharge_amount=9,
        ),
        900,
        900,
        0,
    ),
]


@pytest.mark.parametrize(("kind", "response", "main", "before", "after"), TABLE, ids=lambda v: v)
def test_preauth_answers_follow_the_protocol_table(
    kind: str, response: m.TransactionResponse, main: int | None, before: int, after: int
) -> None:
    fields = tx_fields(response, kind)
    assert (PID, response.transaction_type, before, after) == (
        fields["preauth_id"],
        fields["transaction_type"],
        fields["balance_before_cents"],
        fields["balance_after_cents"],
    )
    record = TxRecord(pos_ref_id="p", command_id="c", tx_type=kind)
    assert (0 if main is None else main) == amounts(response, record)["amount_cents"]


@pytest.mark.parametrize(("kind", "response", "main", "before", "after"), TABLE, ids=lambda v: v)
def test_without_a_record_the_terminals_transaction_type_picks_the_row(
    kind: str, response: m.TransactionResponse, main: int | None, before: int, after: int
) -> None:
    """A lookup (get_transaction) nests the answer under its own event: no command type."""
    fields = tx_fields(response)
    assert (before, after) == (fields["balance_before_cents"], fields["balance_after_cents"])
    assert main == amounts(response, None).get("amount_cents")


def test_a_declined_preauth_transaction_reports_no_balances() -> None:
    declined = m.TransactionResponse(
        id="1",
        event="completion_response",
        success=False,
        transaction_type="PCOMP",
        preauth_id=PID,
        completion_amount=900,
        error_reason="PRE_AUTH_ID_ALREADY_COMPLETED",
    )
    fields = tx_fields(declined, "preauth_complete")
    assert ("PRE_AUTH_ID_ALREADY_COMPLETED", PID) == (fields["error_reason"], fields["preauth_id"])
    assert "balance_before_cents" not in fields
    assert "balance_after_cents" not in fields


def test_the_preauth_fixture_reads_as_an_opened_preauth() -> None:
    response = _fixture("PreAuthorisation.json")
    fields = {**amounts(response, None), **tx_fields(response)}
    assert ("12345678", "PRE-AUTH", 1000, 0, 1000) == (
        fields["preauth_id"],
        fields["transaction_type"],
        fields["amount_cents"],
        fields["balance_before_cents"],
        fields["balance_after_cents"],
    )


def test_the_account_verify_fixture_has_no_amount_and_no_balances() -> None:
    fields = tx_fields(_fixture("AccountVerifyResponse.json"), "account_verify")
    assert ("VERIFY", None) == (fields["transaction_type"], fields["preauth_id"])
    assert "balance_before_cents" not in fields


@pytest.mark.parametrize(
    ("name", "kind", "zip_data"),
    [
        (
            "ZipPurchaseResponse.json",
            "zip_purchase",
            {"location_id": "1234", "receipt_number": "123456", "store_code": "ABC"},
        ),
        (
            "ZipRefundResponse.json",
            "zip_refund",
            {"location_id": "1234", "receipt_number": "123456", "original_receipt_number": "12345"},
        ),
    ],
)
def test_zip_fixtures_give_their_zip_data_and_amount(
    name: str, kind: str, zip_data: dict[str, str]
) -> None:
    response = _fixture(name)
    record = TxRecord(pos_ref_id="z", command_id="c", tx_type=kind, amount_cents=1)
    assert (zip_data, 1000) == (
        tx_fields(response, kind)["zip_data"],
        amounts(response, record)["amount_cents"],
    )


REQUESTS: list[tuple[bs.Command, m.TransactionRequest]] = [
    (bs.AccountVerify(command_id="c", pos_ref_id="r"), m.AccountVerifyRequest(pos_ref_id="r")),
    (
        bs.PreauthOpen(command_id="c", pos_ref_id="r", amount_cents=100),
        m.PreauthOpenRequest(pos_ref_id="r", preauth_amount=100),
    ),
    (
        bs.PreauthTopup(command_id="c", pos_ref_id="r", preauth_id=PID, amount_cents=100),
        m.PreauthTopupRequest(pos_ref_id="r", preauth_id=PID, topup_amount=100),
    ),
    (
        bs.PreauthPartialCancel(command_id="c", pos_ref_id="r", preauth_id=PID, amount_cents=100),
        m.PreauthPartialCancellationRequest(
            pos_ref_id="r", preauth_id=PID, preauth_cancel_amount=100
        ),
    ),
    (
        bs.PreauthExtend(command_id="c", pos_ref_id="r", preauth_id=PID),
        m.PreauthExtendRequest(pos_ref_id="r", preauth_id=PID),
    ),
    (
        bs.PreauthCancel(command_id="c", pos_ref_id="r", preauth_id=PID),
        m.PreauthCancellationRequest(pos_ref_id="r", preauth_id=PID),
    ),
    (
        bs.PreauthComplete(
            command_id="c", pos_ref_id="r", preauth_id=PID, amount_cents=100, surcharge_cents=5
        ),
        m.PreauthCompletionRequest(
            pos_ref_id="r", preauth_id=PID, completion_amount=100, surcharge_amount=5
        ),
    ),
    (
        bs.ZipPurchase(
            command_id="c", pos_ref_id="r", amount_cents=100, store_code="S", description="d"
        ),
        m.ZipPurchaseRequest(pos_ref_id="r", purchase_amount=100, store_code="S", description="d"),
    ),
    (
        bs.ZipRefund(command_id="c", pos_ref_id="r", amount_cents=100, original_receipt_number="9"),
        m.ZipRefundRequest(pos_ref_id="r", refund_amount=100, original_receipt_number="9"),
    ),
]


@pytest.mark.parametrize(("command", "request_"), REQUESTS, ids=lambda v: type(v).__name__)
def test_each_command_becomes_its_spi_request(
    command: bs.Command, request_: m.TransactionRequest
) -> None:
    built = spi_request(command, None)
    assert request_ == built
    assert TX_TYPES[command.type] is built.tx_type
