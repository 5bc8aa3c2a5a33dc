"""Every terminal fixture of shared/spi/fixtures parsed into its typed form (PROTOCOL.md §7, §9).

The fixtures are real terminal messages copied from spi-client-js 2.8.3; they
are read in place (tests/spi_shared.py), never copied here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import pytest

from multipair.spi.envelope import Message
from multipair.spi.messages import (
    BillDetailsReply,
    GetTransactionResponse,
    KeyRequest,
    PayAtTableMessage,
    SchemeTotals,
    SettlementResponse,
    TerminalMessage,
    TransactionResponse,
    UnknownMessage,
    parse_terminal_message,
)
from tests.spi_shared import fixture_names, load_fixture

EXPECTED_TYPES: dict[str, type[TerminalMessage]] = {
    "AccountVerifyResponse.json": TransactionResponse,
    # bill_details is the POS's answer, not a terminal message (§7.23).
    "BillDetailsResponse.json": UnknownMessage,
    "BillPaymentWithCard.json": PayAtTableMessage,
    "BillStatusRequest.json": PayAtTableMessage,
    "CashoutOnlyResponse.json": TransactionResponse,
    "GetLastTransactionResponse_NoTransactions.json": TransactionResponse,
    "GetLastTransactionResponse_PurchaseSuccess.json": TransactionResponse,
    "GetTransactionResponse_AuthCodeRequired.json": GetTransactionResponse,
    "GetTransactionResponse_MissingPosRefId.json": GetTransactionResponse,
    "GetTransactionResponse_MissingTransactionData.json": GetTransactionResponse,
    "GetTransactionResponse_OpInProgress.json": GetTransactionResponse,
    "GetTransactionResponse_PosRefIdInvalid.json": GetTransactionResponse,
    "GetTransactionResponse_PosRefIdNotFound.json": GetTransactionResponse,
    "GetTransactionResponse_PurchaseSuccess.json": GetTransactionResponse,
    "GetTransactionResponse_SignatureRequired.json": GetTransactionResponse,
    "GetTransactionResponse_TransactionInProgress.json": GetTransactionResponse,
    "GetTransactionResponse_Unexpected.json": GetTransactionResponse,
    "KeyRequest.json": KeyRequest,
    "MotoResponse_Mail.json": TransactionResponse,
    "MotoResponse_Phone.json": TransactionResponse,
    "PreAuthorisation.json": TransactionResponse,
    "PurchaseResponse.json": TransactionResponse,
    "PurchaseWithCashoutResponse.json": TransactionResponse,
    "RefundResponse.json": TransactionResponse,
    "ReversalResponse_Error.json": TransactionResponse,
    "ReversalResponse_Success.json": TransactionResponse,
    "SettleResponse.json": SettlementResponse,
    "SettlementEnquiryResponse.json": SettlementResponse,
    "ZipPurchaseResponse.json": TransactionResponse,
    "ZipRefundResponse.json": TransactionResponse,
}


def _message(name: str) -> Message:
    inner = load_fixture(name)["message"]
    return Message(
        id=str(inner["id"]),
        event=inner["event"],
        data=inner.get("data"),
        datetime=inner.get("datetime"),
        conn_id=inner.get("conn_id"),
    )


_T = TypeVar("_T")


def _parse(name: str, expected_type: type[_T]) -> _T:
    parsed = parse_terminal_message(_message(name))
    assert isinstance(parsed, expected_type)
    return parsed


def _fields(obj: object, names: Iterable[str]) -> dict[str, object]:
    """The named attributes of ``obj``, to compare with a dict of expected values."""
    return {name: getattr(obj, name) for name in names}


def test_every_fixture_has_an_expected_type() -> None:
    names = fixture_names()
    if not names:
        pytest.skip("SPI fixtures not found")

    assert sorted(names) == sorted(EXPECTED_TYPES)


@pytest.mark.parametrize("name", fixture_names())
def test_fixture_parses_into_its_typed_form_keeping_id_and_raw_data(name: str) -> None:
    message = _message(name)

    parsed = parse_terminal_message(message)

    assert EXPECTED_TYPES[name] is type(parsed)
    assert message.id == parsed.id
    assert message.data == parsed.data


def test_purchase_response_reads_amounts_receipts_and_card_fields() -> None:
    expected = {
        "event": "purchase_response",
        "success": True,
        "pos_ref_id": "purchase-2000-01-01T00:00:00.000Z",
        "transaction_type": "PURCHASE",
        "purchase_amount": 10,
        "bank_noncash_amount": 10,
        "tip_amount": None,
        "host_response_code": "002",
        "host_response_text": "APPROVED",
        "masked_pan": "............1111",
        "card_entry": "EMV_CTLS",
        "bank_date": "01012000",
        "bank_time": "100000",
        "customer_receipt_printed": False,
        "retrieved": True,
    }

    parsed = _parse("PurchaseResponse.json", TransactionResponse)

    assert expected == _fields(parsed, expected)
    assert parsed.customer_receipt is not None
    assert parsed.customer_receipt.startswith("EFTPOS FROM BANK\r\nMerchant\r\n")


def test_purchase_with_cashout_reads_a_purchase_amount_sent_as_a_string() -> None:
    # No pos_ref_id: a 2.9.13 client would ignore this as a live response (§13.9).
    expected = {
        "id": "3",
        "purchase_amount": 2500,
        "bank_cash_amount": 1000,
        "bank_noncash_amount": 2500,
        "tip_amount": 0,
        "pos_ref_id": None,
    }

    parsed = _parse("PurchaseWithCashoutResponse.json", TransactionResponse)

    assert expected == _fields(parsed, expected)
    assert isinstance(parsed.data["purchase_amount"], str)


def test_refund_response_reads_the_refund_amount() -> None:
    expected = {
        "event": "refund_response",
        "transaction_type": "REFUND",
        "refund_amount": 100,
        "pos_ref_id": "refund-2000-01-01T00:00:00.000Z",
    }

    parsed = _parse("RefundResponse.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_cashout_only_response_reads_cash_amounts_and_empty_receipts() -> None:
    expected = {
        "event": "cash_response",
        "transaction_type": "CASH",
        "cash_amount": 1500,
        "bank_cash_amount": 1500,
        "bank_noncash_amount": 0,
        "customer_receipt": "",
        "merchant_receipt": "",
    }

    parsed = _parse("CashoutOnlyResponse.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


@pytest.mark.parametrize(
    ("name", "card_entry"),
    [("MotoResponse_Mail.json", "MANUAL_MAIL"), ("MotoResponse_Phone.json", "MANUAL_PHONE")],
)
def test_moto_response_reads_how_the_card_was_keyed(name: str, card_entry: str) -> None:
    expected = {
        "event": "moto_purchase_response",
        "transaction_type": "MOTO",
        "purchase_amount": 100,
        "card_entry": card_entry,
    }

    parsed = _parse(name, TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_last_transaction_reads_its_fields_flat() -> None:
    expected = {
        "id": "glt",
        "event": "last_transaction",
        "pos_ref_id": "purchase-2000-01-01T00:00:00.000Z",
        "success": True,
        "purchase_amount": 10,
        "host_response_code": "002",
        "retrieved": True,
    }

    parsed = _parse("GetLastTransactionResponse_PurchaseSuccess.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_last_transaction_without_transactions_is_not_retrieved() -> None:
    expected = {
        "success": False,
        "error_reason": "NO_TRANSACTION",
        "error_detail": "No transactions have been performed",
        "host_response_code": None,
        "retrieved": False,
    }

    parsed = _parse("GetLastTransactionResponse_NoTransactions.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_get_transaction_success_nests_the_original_response_under_tx() -> None:
    expected_outer = {"success": True, "pos_ref_id": None, "error_reason": None}
    expected_tx = {
        "id": "gt",
        "event": "get_transaction_response",
        "pos_ref_id": "purchase-2000-01-01T00:00:00.000Z",
        "success": True,
        "purchase_amount": 10,
        "transaction_type": "PURCHASE",
        "retrieved": True,
    }

    parsed = _parse("GetTransactionResponse_PurchaseSuccess.json", GetTransactionResponse)

    assert expected_outer == _fields(parsed, expected_outer)
    assert parsed.tx is not None
    assert expected_tx == _fields(parsed.tx, expected_tx)
    assert parsed.data["tx"] == parsed.tx.data


def test_get_transaction_success_without_tx_has_no_transaction() -> None:
    expected = {
        "success": True,
        "tx": None,
        "error_reason": None,
        "pos_ref_id": "gt-2000-01-01T00:00:00.000Z",
    }

    parsed = _parse("GetTransactionResponse_MissingTransactionData.json", GetTransactionResponse)

    assert expected == _fields(parsed, expected)


BUSY = "Payment interface is busy, cannot process operation at this time"


@pytest.mark.parametrize(
    ("name", "reason", "detail"),
    [
        (
            "GetTransactionResponse_AuthCodeRequired.json",
            "TRANSACTION_IN_PROGRESS_AWAITING_PHONE_AUTH_CODE",
            BUSY,
        ),
        (
            "GetTransactionResponse_SignatureRequired.json",
            "TRANSACTION_IN_PROGRESS_AWAITING_SIGNATURE",
            BUSY,
        ),
        ("GetTransactionResponse_TransactionInProgress.json", "TRANSACTION_IN_PROGRESS", BUSY),
        ("GetTransactionResponse_OpInProgress.json", "OPERATION_IN_PROGRESS", BUSY),
        (
            "GetTransactionResponse_PosRefIdNotFound.json",
            "POS_REF_ID_NOT_FOUND",
            "PosRefId not found",
        ),
        ("GetTransactionResponse_PosRefIdInvalid.json", "INVALID_ARGUMENTS", "PosRefId is invalid"),
        ("GetTransactionResponse_MissingPosRefId.json", "MISSING_ARGUMENTS", "PosRefId is missing"),
        ("GetTransactionResponse_Unexpected.json", "INTERNAL_ERROR", "418 I'm a teapot"),
    ],
)
def test_get_transaction_failure_reads_reason_and_detail(
    name: str, reason: str, detail: str
) -> None:
    expected = {
        "success": False,
        "tx": None,
        "error_reason": reason,
        "error_detail": detail,
        "pos_ref_id": "gt-2000-01-01T00:00:00.000Z",
    }

    parsed = _parse(name, GetTransactionResponse)

    assert expected == _fields(parsed, expected)


def test_reversal_success_reads_pos_ref_id_and_success() -> None:
    expected = {"event": "reverse_transaction_response", "success": True, "pos_ref_id": "rev"}

    parsed = _parse("ReversalResponse_Success.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_reversal_error_reads_reason_and_detail() -> None:
    expected = {
        "success": False,
        "error_reason": "INTERNAL_ERROR",
        "error_detail": "This transaction could not be reversed",
    }

    parsed = _parse("ReversalResponse_Error.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_settle_response_reads_totals_and_schemes_sent_as_strings() -> None:
    expected = {
        "event": "settle_response",
        "success": True,
        "host_response_code": "941",
        "host_response_text": "CUTOVER COMPLETE",
        "accumulated_total_count": 4,
        "accumulated_total_value": 200,
        "accumulated_settle_by_acquirer_count": 4,
        "accumulated_settle_by_acquirer_value": 200,
    }
    expected_mastercard = SchemeTotals(
        scheme_name="MasterCard",
        settle_by_acquirer=True,
        total_count=3,
        total_value=100,
        total_purchase_count=2,
        total_purchase_value=200,
        total_refund_count=1,
        total_refund_value=-100,
    )
    expected_debit = SchemeTotals(
        scheme_name="Debit",
        settle_by_acquirer=True,
        total_count=1,
        total_value=100,
        total_cash_count=1,
        total_cash_value=100,
    )
    expected_settled_by_acquirer = [True, True, True, False, False, False, False]

    parsed = _parse("SettleResponse.json", SettlementResponse)

    assert expected == _fields(parsed, expected)
    assert expected_debit == parsed.schemes[0]
    assert expected_mastercard == parsed.schemes[1]
    assert expected_settled_by_acquirer == [s.settle_by_acquirer for s in parsed.schemes]
    assert parsed.merchant_receipt is not None
    assert "SETTLEMENT CUTOVER" in parsed.merchant_receipt


def test_settlement_enquiry_response_reads_zero_totals() -> None:
    expected = {
        "event": "settlement_enquiry_response",
        "host_response_code": "000",
        "accumulated_total_count": 0,
        "accumulated_total_value": 0,
    }
    expected_schemes = ["Debit", "MasterCard", "Visa", "Amex", "Diners", "JCB", "UnionPay"]

    parsed = _parse("SettlementEnquiryResponse.json", SettlementResponse)

    assert expected == _fields(parsed, expected)
    assert expected_schemes == [s.scheme_name for s in parsed.schemes]
    assert all(s.total_count == 0 and s.total_value == 0 for s in parsed.schemes)


def test_account_verify_response_is_a_transaction_response() -> None:
    expected = {
        "event": "account_verify_response",
        "transaction_type": "VERIFY",
        "pos_ref_id": "POS_REF_ID_7",
        "auth_code": "201633",
        "rrn": "170908000005",
        "stan": "000005",
    }

    parsed = _parse("AccountVerifyResponse.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


def test_preauth_response_reads_preauth_id_and_amount() -> None:
    expected = {
        "event": "preauth_response",
        "transaction_type": "PRE-AUTH",
        "preauth_id": "12345678",
        "preauth_amount": 1000,
        "pos_ref_id": "POS_REF_ID_7",
    }

    parsed = _parse("PreAuthorisation.json", TransactionResponse)

    assert expected == _fields(parsed, expected)


@pytest.mark.parametrize(
    ("name", "event", "amount_field", "zip_data"),
    [
        (
            "ZipPurchaseResponse.json",
            "purchase_zip_response",
            "purchase_amount",
            {"location_id": "1234", "receipt_number": "123456", "store_code": "ABC"},
        ),
        (
            "ZipRefundResponse.json",
            "refund_zip_response",
            "refund_amount",
            {"location_id": "1234", "receipt_number": "123456", "original_receipt_number": "12345"},
        ),
    ],
)
def test_zip_responses_keep_zip_data_in_data(
    name: str, event: str, amount_field: str, zip_data: dict[str, Any]
) -> None:
    expected = {
        "event": event,
        amount_field: 1000,
        "host_response_code": "000",
        "host_response_text": "TRANS APPROVED",
        "customer_receipt_printed": True,
        "merchant_receipt_printed": True,
    }

    parsed = _parse(name, TransactionResponse)

    assert expected == _fields(parsed, expected)
    assert zip_data == parsed.data["zip_data"]


def test_key_request_reads_both_public_values() -> None:
    expected_id, expected_hex_digits = "62", 512

    parsed = _parse("KeyRequest.json", KeyRequest)

    assert expected_id == parsed.id
    assert expected_hex_digits == len(parsed.enc_a)
    assert expected_hex_digits == len(parsed.hmac_a)
    assert parsed.enc_a.startswith("17E7BE43D531")
    assert parsed.hmac_a.startswith("89708531EADF")


@pytest.mark.parametrize(
    ("name", "event", "message_id"),
    [
        ("BillStatusRequest.json", "get_bill_details", "C1.0"),
        ("BillPaymentWithCard.json", "bill_payment", "C1.2"),
    ],
)
def test_pay_at_table_requests_are_handed_on_with_their_event(
    name: str, event: str, message_id: str
) -> None:
    expected = {"event": event, "id": message_id}

    parsed = _parse(name, PayAtTableMessage)

    assert expected == _fields(parsed, expected)
    assert "table_id" in parsed.data


def test_bill_payment_details_read_as_a_purchase_response() -> None:
    expected = {"purchase_amount": 1234, "tip_amount": 1234, "terminal_ref_id": "some string"}
    parsed = _parse("BillPaymentWithCard.json", PayAtTableMessage)

    details = TransactionResponse.parse(parsed.id, parsed.event, parsed.data["payment_details"])

    assert expected == _fields(details, expected)


def test_bill_details_fixture_is_a_pos_message_the_terminal_side_can_read() -> None:
    expected = {"success": True, "bill_total_amount": 5000, "bill_outstanding_amount": 2532}
    expected_payment_types = ["cash", "card"]
    data = load_fixture("BillDetailsResponse.json")["message"]["data"]

    reply = BillDetailsReply.from_data(data)

    assert expected == _fields(reply, expected)
    assert expected_payment_types == [e.payment_type for e in reply.bill_payment_history]
