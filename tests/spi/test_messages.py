"""Requests the POS builds, the ids they get, and the lenient readers (PROTOCOL.md §2.5, §7).

Terminal fixtures are parsed in test_fixtures.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multipair.exceptions import InvalidRequest, LocalProtocolError, RemoteProtocolError
from multipair.spi.envelope import JsonObject, Message, dumps
from multipair.spi.messages import (
    MAX_AMOUNT,
    REQUEST_CLASSES_BY_EVENT,
    TRANSACTION_REQUESTS,
    AccountVerifyRequest,
    AuthCodeAdviceRequest,
    BillDetailsReply,
    BillPaymentFlowEndedAck,
    CancelTransactionRequest,
    CashoutRequest,
    DropKeysRequest,
    Event,
    GetLastTransactionRequest,
    GetTerminalConfigurationRequest,
    GetTerminalStatusRequest,
    GetTransactionRequest,
    MotoPurchaseRequest,
    OpenTable,
    OpenTablesReply,
    PairRequest,
    PaymentHistoryEntry,
    PingRequest,
    PongReply,
    PosSpiToken,
    PreauthCancellationRequest,
    PreauthCompletionRequest,
    PreauthExtendRequest,
    PreauthOpenRequest,
    PreauthPartialCancellationRequest,
    PreauthTopupRequest,
    PrintingConfig,
    PrintRequest,
    PurchaseRequest,
    ReceiptOptions,
    RefundRequest,
    Request,
    RequestIds,
    ReversalRequest,
    SetPosInfoRequest,
    SetTableConfigRequest,
    SettlementEnquiryRequest,
    SettleRequest,
    SignatureAcceptRequest,
    SignatureDeclineRequest,
    TransactionResponse,
    TxType,
    ZipPurchaseRequest,
    ZipRefundRequest,
    as_bool,
    as_int,
    as_str,
    build_message,
    parse_request,
    parse_terminal_message,
)
from tests.spi_shared import SHARED_SPI, load_vector

FULL_OPTIONS = ReceiptOptions(
    customer_receipt_header="CUST HEAD",
    customer_receipt_footer="CUST FOOT",
    merchant_receipt_header="MERCH HEAD",
    merchant_receipt_footer="MERCH FOOT",
)
ALL_PRINTING = PrintingConfig(
    print_merchant_copy=True,
    prompt_for_customer_copy=True,
    print_for_signature_required_transactions=True,
)

# One request per entry of vectors/request_messages.json, keyed by its label.
VECTOR_REQUESTS: dict[str, Request] = {
    "pair_request": PairRequest(),
    "drop_keys": DropKeysRequest(),
    "ping": PingRequest(),
    'pong reply to a terminal ping with id "ping77"': PongReply(),
    "purchase, defaults (no config, empty options)": PurchaseRequest(
        pos_ref_id="order-1", purchase_amount=1000
    ),
    "purchase with cashout 500, prompt_for_cashout, surcharge 150, all receipt config on, "
    "options set": PurchaseRequest(
        pos_ref_id="order-2",
        purchase_amount=1000,
        cash_amount=500,
        prompt_for_cashout=True,
        surcharge_amount=150,
        options=FULL_OPTIONS,
        config=ALL_PRINTING,
    ),
    "purchase with tip 200": PurchaseRequest(
        pos_ref_id="order-3", purchase_amount=1000, tip_amount=200
    ),
    "refund 700, suppress_merchant_password true, config + options": RefundRequest(
        pos_ref_id="refund-1",
        refund_amount=700,
        suppress_merchant_password=True,
        options=FULL_OPTIONS,
        config=ALL_PRINTING,
    ),
    "refund defaults": RefundRequest(pos_ref_id="refund-2", refund_amount=700),
    "cash (cashout only) 2000, surcharge 0": CashoutRequest(pos_ref_id="cash-1", cash_amount=2000),
    "cash built without setting surcharge (null is sent)": CashoutRequest(
        pos_ref_id="cash-2", cash_amount=2000, surcharge_amount=None
    ),
    "moto_purchase 1500, surcharge 0, suppress_merchant_password false": MotoPurchaseRequest(
        pos_ref_id="moto-1", purchase_amount=1500
    ),
    "settle (config: only print_merchant_copy may be added)": SettleRequest(
        config=PrintingConfig(print_merchant_copy=True)
    ),
    "settlement_enquiry": SettlementEnquiryRequest(),
    "cancel_transaction": CancelTransactionRequest(),
    "get_last_transaction": GetLastTransactionRequest(),
    "get_transaction": GetTransactionRequest(pos_ref_id="order-1"),
    "reverse_transaction": ReversalRequest(pos_ref_id="order-1"),
    "signature_accept": SignatureAcceptRequest(pos_ref_id="order-1"),
    "signature_decline": SignatureDeclineRequest(pos_ref_id="order-1"),
    "authorisation_code_advice": AuthCodeAdviceRequest(pos_ref_id="order-1", auth_code="AB1234"),
    "print": PrintRequest(key="receipt-key-1", payload="Hello\nWorld"),
    "get_terminal_status": GetTerminalStatusRequest(),
    "get_terminal_configuration": GetTerminalConfigurationRequest(),
    "set_pos_info (other_info normally carries device_system from the browser user agent)": (
        SetPosInfoRequest(
            pos_version="1.2.3",
            pos_vendor_id="acme-pos",
            library_language="js",
            library_version="2.8.3",
            spice_version="",
            device_system="Mozilla/5.0 (example)",
        )
    ),
    "account_verify": AccountVerifyRequest(pos_ref_id="av-1"),
    "preauth (open) 10000": PreauthOpenRequest(pos_ref_id="pa-1", preauth_amount=10000),
    "preauth_topup 2000": PreauthTopupRequest(
        pos_ref_id="pa-2", preauth_id="15765372", topup_amount=2000
    ),
    "preauth_partial_cancellation 500": PreauthPartialCancellationRequest(
        pos_ref_id="pa-3", preauth_id="15765372", preauth_cancel_amount=500
    ),
    "preauth_extend": PreauthExtendRequest(pos_ref_id="pa-4", preauth_id="15765372"),
    "preauth_cancellation": PreauthCancellationRequest(pos_ref_id="pa-5", preauth_id="15765372"),
    "completion 9000 with surcharge 100": PreauthCompletionRequest(
        pos_ref_id="pa-6", preauth_id="15765372", completion_amount=9000, surcharge_amount=100
    ),
    "purchase_zip": ZipPurchaseRequest(
        pos_ref_id="zip-1", purchase_amount=1000, store_code="ABC", description="Coffee"
    ),
    "refund_zip": ZipRefundRequest(
        pos_ref_id="zip-2", refund_amount=1000, original_receipt_number="123456"
    ),
    "set_table_config (reply to get_table_config reuses the incoming id)": SetTableConfigRequest(
        pay_at_table_enabled=True,
        operator_id_enabled=True,
        table_id_label="Table",
        operator_id_list=("7", "8"),
    ),
    "set_table_config sent when pay-at-table is not enabled": SetTableConfigRequest(),
    "bill_details, success": BillDetailsReply(
        success=True,
        bill_id="bill-1",
        table_id="12",
        bill_total_amount=5000,
        bill_outstanding_amount=2500,
        bill_payment_history=(
            PaymentHistoryEntry(payment_type="cash", payment_summary={"purchase_amount": 2500}),
        ),
    ),
    "bill_details, error": BillDetailsReply(
        success=False, table_id="99", error_reason="INVALID_TABLE_ID"
    ),
    "open_tables": OpenTablesReply(
        tables=(OpenTable(table_id="12", label="Twelve", bill_outstanding_amount=2500),)
    ),
    "bill_payment_flow_ended_ack": BillPaymentFlowEndedAck(bill_id="bill-1"),
}

# 2.9 moved the zip receipt options (§13.13); the vector holds the 2.8.3 order.
ZIP_EVENTS = {Event.PURCHASE_ZIP, Event.REFUND_ZIP}


def data_of(request: Request) -> JsonObject:
    """A request's ``data`` for a request that sends an object (not ``null``)."""
    data = request.to_data()
    assert data is not None, f"{type(request).__name__} sends null data"
    return data


def _vector(label: str) -> dict[str, Any]:
    entries = load_vector("request_messages.json")["messages"]
    (entry,) = [e for e in entries if e["label"] == label]
    return entry  # type: ignore[no-any-return]


def _build_like_vector(request: Request, vector_id: str) -> tuple[str, str, Any]:
    """Build with the counter where the vector's run had it, or as a reply to its id."""
    match = re.fullmatch(r"([a-z]+)(\d+)", vector_id)
    if request.id_prefix and match and match.group(1) == request.id_prefix:
        return build_message(request, RequestIds(start=int(match.group(2))))
    return build_message(request, RequestIds(), reply_to=vector_id)


def test_every_request_vector_has_a_request_here() -> None:
    expected_count = 40

    labels = [e["label"] for e in load_vector("request_messages.json")["messages"]]

    assert expected_count == len(labels)
    assert sorted(labels) == sorted(VECTOR_REQUESTS)


@pytest.mark.parametrize("label", list(VECTOR_REQUESTS))
def test_request_reproduces_its_vector_id_event_and_data_in_key_order(label: str) -> None:
    vector = _vector(label)
    request = VECTOR_REQUESTS[label]

    message_id, event, data = _build_like_vector(request, vector["id"])

    assert vector["id"] == message_id
    assert vector["event"] == event
    if event in ZIP_EVENTS:
        assert vector["data"] == data
    else:
        # json.dumps keeps insertion order, so nested objects are compared in order too.
        assert json.dumps(vector["data"]) == json.dumps(data)


@pytest.mark.parametrize("label", list(VECTOR_REQUESTS))
def test_request_reads_back_from_its_own_data(label: str) -> None:
    request = VECTOR_REQUESTS[label]

    assert request == type(request).from_data(request.to_data())


def test_zip_requests_send_receipt_options_in_the_2_9_order_then_allowed_flags() -> None:
    purchase = ZipPurchaseRequest(
        pos_ref_id="zip-1",
        purchase_amount=1000,
        store_code="ABC",
        options=FULL_OPTIONS,
        config=ALL_PRINTING,
    )
    refund = ZipRefundRequest(
        pos_ref_id="zip-2", refund_amount=1000, original_receipt_number="1", config=ALL_PRINTING
    )
    options_and_flags = [
        "merchant_receipt_header",
        "merchant_receipt_footer",
        "customer_receipt_header",
        "customer_receipt_footer",
        "prompt_for_customer_copy",
        "print_merchant_copy",
    ]

    assert [
        "pos_ref_id",
        "purchase_amount",
        "zip_data",
        "basket",
        *options_and_flags,
    ] == list(data_of(purchase))
    assert ["pos_ref_id", "refund_amount", "zip_data", *options_and_flags] == list(data_of(refund))


def test_settlement_requests_carry_only_the_merchant_copy_flag() -> None:
    for request in (
        SettleRequest(config=ALL_PRINTING),
        SettlementEnquiryRequest(config=ALL_PRINTING),
    ):
        data = data_of(request)

        assert True is data["print_merchant_copy"]
        assert "prompt_for_customer_copy" not in data
        assert "print_for_signature_required_transactions" not in data


def test_settle_does_not_send_its_pos_ref_id() -> None:
    assert "pos_ref_id" not in data_of(SettleRequest(pos_ref_id="day-1"))


def test_printing_flags_that_are_off_are_left_out() -> None:
    data = data_of(
        PurchaseRequest(
            pos_ref_id="p",
            purchase_amount=1,
            config=PrintingConfig(print_merchant_copy=True),
        )
    )

    assert True is data["print_merchant_copy"]
    assert "prompt_for_customer_copy" not in data
    assert "print_for_signature_required_transactions" not in data


def test_set_pos_info_defaults_to_python_and_sends_a_missing_spice_version_as_null() -> None:
    expected = {
        "pos_version": "1",
        "pos_vendor_id": "v",
        "library_language": "python",
        "library_version": "0.1.0",
        "spice_version": None,
        "other_info": {"device_system": "", "spice_version": None},
    }

    request = SetPosInfoRequest(pos_version="1", pos_vendor_id="v", library_version="0.1.0")

    assert expected == request.to_data()


# -- ids (§2.5) ---------------------------------------------------------------


def test_request_ids_share_one_counter_starting_at_1_and_refunds_spend_one_value() -> None:
    expected, expected_next = ["prchs1", "refund2", "glt3", "refund4"], 5
    ids = RequestIds()

    actual = [ids.next("prchs"), ids.next("refund"), ids.next("glt"), ids.next("refund")]

    assert expected == actual
    assert expected_next == ids.counter


def test_build_message_spends_a_counter_value_per_new_request() -> None:
    expected = [("ping7", "ping", None), ("glt8", "get_last_transaction", None)]
    ids = RequestIds(start=7)

    actual = [build_message(PingRequest(), ids), build_message(GetLastTransactionRequest(), ids)]

    assert expected == actual


def test_a_reply_reuses_the_incoming_id_and_spends_no_counter_value() -> None:
    expected, expected_next = ("C12.4", "pong", None), 3
    ids = RequestIds(start=3)

    reply = build_message(PongReply(), ids, reply_to="C12.4")

    assert expected == reply
    assert expected_next == ids.counter


def test_a_reply_only_event_without_reply_to_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="reply_to"):
        build_message(PongReply(), RequestIds())


def test_request_ids_refuse_a_negative_start() -> None:
    with pytest.raises(ValueError, match="start"):
        RequestIds(start=-1)


# -- validation when building (POS side) --------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: PurchaseRequest(pos_ref_id="p", purchase_amount=-1),
            "purchase_amount must be >= 0, got -1",
        ),
        (
            lambda: RefundRequest(pos_ref_id="p", refund_amount=-700),
            "refund_amount must be >= 0, got -700",
        ),
        (
            lambda: CashoutRequest(pos_ref_id="p", cash_amount=10, surcharge_amount=-5),
            "surcharge_amount must be >= 0, got -5",
        ),
        (
            lambda: PreauthTopupRequest(pos_ref_id="p", preauth_id="1", topup_amount=-2),
            "topup_amount must be >= 0, got -2",
        ),
        (
            lambda: PurchaseRequest(pos_ref_id="p", purchase_amount=True),
            "purchase_amount must be an int number of cents, got bool True",
        ),
        (
            lambda: MotoPurchaseRequest(pos_ref_id="p", purchase_amount=10.5),  # type: ignore[arg-type]
            "purchase_amount must be an int number of cents, got float 10.5",
        ),
        (
            lambda: PreauthOpenRequest(pos_ref_id="p", preauth_amount="100"),  # type: ignore[arg-type]
            "preauth_amount must be an int number of cents, got str '100'",
        ),
        (
            lambda: GetTransactionRequest(pos_ref_id=None),  # type: ignore[arg-type]
            "pos_ref_id must be a str, got NoneType",
        ),
        (
            lambda: RefundRequest(pos_ref_id="p", refund_amount=MAX_AMOUNT + 1),
            "refund_amount must be <= 9007199254740991",
        ),
        (
            lambda: PurchaseRequest(pos_ref_id="p", purchase_amount=2**64),
            "purchase_amount must be <= 9007199254740991",
        ),
        (
            lambda: GetTransactionRequest(pos_ref_id="order-\ud800"),
            "pos_ref_id is not valid Unicode text",
        ),
    ],
)
def test_bad_amounts_and_values_raise_invalid_request_naming_the_field(
    build: Any, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build()

    assert message == str(caught.value)


@pytest.mark.parametrize(
    ("cash_amount", "prompt_for_cashout"),
    [(500, False), (0, True), (500, True)],
)
def test_purchase_with_tip_and_cashout_is_refused(
    cash_amount: int, prompt_for_cashout: bool
) -> None:
    expected = "Cannot Accept Tips and Cashout at the same time."

    with pytest.raises(InvalidRequest) as caught:
        PurchaseRequest(
            pos_ref_id="p",
            purchase_amount=1000,
            tip_amount=100,
            cash_amount=cash_amount,
            prompt_for_cashout=prompt_for_cashout,
        )

    assert expected == str(caught.value)


def test_purchase_with_cashout_and_no_tip_is_allowed() -> None:
    expected = {
        "pos_ref_id": "p",
        "purchase_amount": 1000,
        "tip_amount": 0,
        "cash_amount": 500,
        "prompt_for_cashout": True,
        "surcharge_amount": 0,
    }

    request = PurchaseRequest(
        pos_ref_id="p", purchase_amount=1000, cash_amount=500, prompt_for_cashout=True
    )

    assert expected == {k: v for k, v in data_of(request).items() if k in expected}


@pytest.mark.parametrize("code", ["12345", "1234567", ""])
def test_auth_code_of_other_than_six_characters_is_refused(code: str) -> None:
    expected = "Not a 6-digit code."

    with pytest.raises(InvalidRequest) as caught:
        AuthCodeAdviceRequest(pos_ref_id="p", auth_code=code)

    assert expected == str(caught.value)


def test_requests_are_frozen() -> None:
    request = PurchaseRequest(pos_ref_id="p", purchase_amount=1)

    with pytest.raises(AttributeError):
        request.purchase_amount = 2  # type: ignore[misc]


# -- reading requests back (terminal side) -------------------------------------


def test_from_data_accepts_numbers_and_booleans_written_as_strings() -> None:
    request = PurchaseRequest.from_data(
        {"pos_ref_id": "p", "purchase_amount": "2500", "prompt_for_cashout": "true"}
    )

    assert PurchaseRequest(pos_ref_id="p", purchase_amount=2500, prompt_for_cashout=True) == request


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (PurchaseRequest, {"pos_ref_id": "p"}, "purchase: purchase_amount is missing"),
        (PurchaseRequest, None, "purchase: pos_ref_id is missing"),
        (
            RefundRequest,
            {"pos_ref_id": "p", "refund_amount": "ten"},
            "refund: refund_amount is not",
        ),
        (GetTransactionRequest, {"pos_ref_id": 1.5}, "get_transaction: pos_ref_id is not a string"),
        (ZipPurchaseRequest, {"pos_ref_id": "z", "purchase_amount": 1}, "purchase_zip: zip_data"),
        (AuthCodeAdviceRequest, {"pos_ref_id": "p", "auth_code": "123"}, "Not a 6-digit code."),
        (
            PurchaseRequest,
            {"pos_ref_id": "p", "purchase_amount": 1, "tip_amount": 1, "cash_amount": 1},
            "Cannot Accept Tips",
        ),
        (CashoutRequest, {"pos_ref_id": "p", "cash_amount": "-5"}, "cash_amount must be >= 0"),
    ],
)
def test_from_data_blames_the_sender_for_missing_or_impossible_values(
    cls: type[Request], data: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        cls.from_data(data)


def test_from_data_tells_a_null_cash_surcharge_from_a_missing_one() -> None:
    null = CashoutRequest.from_data({"pos_ref_id": "c", "cash_amount": 1, "surcharge_amount": None})
    missing = CashoutRequest.from_data({"pos_ref_id": "c", "cash_amount": 1})

    expected = (None, 0)

    assert expected == (null.surcharge_amount, missing.surcharge_amount)


def test_signature_accept_without_data_as_java_sends_it_is_read_with_an_empty_pos_ref_id() -> None:
    assert SignatureAcceptRequest(pos_ref_id="") == SignatureAcceptRequest.from_data(None)


def test_parse_request_picks_the_class_by_event() -> None:
    request = parse_request("reverse_transaction", {"pos_ref_id": "r-1"})

    assert ReversalRequest(pos_ref_id="r-1") == request


def test_parse_request_refuses_an_event_no_pos_sends() -> None:
    with pytest.raises(RemoteProtocolError, match="purchase_response"):
        parse_request("purchase_response", {})


def test_transaction_requests_cover_every_tx_type_with_matching_class_vars() -> None:
    assert set(TxType) == set(TRANSACTION_REQUESTS)
    for tx_type, cls in TRANSACTION_REQUESTS.items():
        assert tx_type == cls.tx_type
        assert cls.response_event in set(Event)


def test_request_classes_are_indexed_by_their_own_event() -> None:
    for event, cls in REQUEST_CLASSES_BY_EVENT.items():
        assert event == cls.event


def test_event_names_cover_appendix_b() -> None:
    protocol = SHARED_SPI / "PROTOCOL.md"
    if not protocol.exists():
        pytest.skip(f"{protocol} not found")
    text = protocol.read_text(encoding="utf-8")
    appendix = text.split("## Appendix B. Event index", 1)[1].split("\n---", 1)[0]
    names: set[str] = set()
    for row in appendix.splitlines():
        cells = [c.strip() for c in row.split("|")]
        if len(cells) < 3 or cells[1] == "event" or not re.match(r"[a-z]", cells[1]):
            continue
        first = ""
        for part in cells[1].split(" / "):
            # "preauth_partial_cancellation / …_response" abbreviates the second name.
            name = first + part[1:] if part.startswith("…") else part
            first = first or name
            names.add(name)
    answers = {"signature_accept", "signature_decline", "authorisation_code_advice"}
    answers |= {"response_use_next_keys", "bill_details", "open_tables"}
    answers |= {"bill_payment_flow_ended_ack"}

    assert names | answers <= {e.value for e in Event}
    assert "preauth_partial_cancellation_response" in names


# -- lenient value readers ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2500", 2500),
        ("-120", -120),
        (" 42 ", 42),
        (12, 12),
        (12.0, 12),
        (True, None),
        (False, None),
        ("12.5", None),
        (12.5, None),
        ("abc", None),
        ("", None),
        ("1_000", None),
        ("١٢", None),
        (float("nan"), None),
        (float("inf"), None),
        ("9" * 5000, None),
        (None, None),
        ([1], None),
    ],
)
def test_as_int_reads_integers_leniently(value: object, expected: int | None) -> None:
    assert expected == as_int(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("FALSE", False),
        ("yes", None),
        (1, None),
        (0, None),
        (None, None),
    ],
)
def test_as_bool_reads_booleans_and_their_strings(value: object, expected: bool | None) -> None:
    assert expected == as_bool(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "abc"), ("", ""), (62, "62"), (True, None), (1.5, None), (None, None), ({}, None)],
)
def test_as_str_reads_strings_and_integer_ids(value: object, expected: str | None) -> None:
    assert expected == as_str(value)


# -- parsed terminal messages -------------------------------------------------------


def test_pos_spi_token_repr_shows_only_the_last_four_characters() -> None:
    token = "secret-token-abcd"
    expected_repr = "PosSpiToken(id='C1.2', token='…abcd')"
    parsed = parse_terminal_message(
        Message(id="C1.2", event="provision_pos_spi_token", data={"pos_spi_auth_token": token})
    )

    assert isinstance(parsed, PosSpiToken)
    assert token == parsed.token
    assert expected_repr == repr(parsed)
    assert "secret" not in repr(parsed)


def test_a_token_message_without_a_token_is_the_terminals_fault() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_terminal_message(Message(id="1", event="provision_pos_spi_token", data={}))


def test_a_transaction_is_retrieved_only_with_a_host_response_code() -> None:
    def parse(data: dict[str, Any]) -> TransactionResponse:
        parsed = parse_terminal_message(Message(id="glt1", event="last_transaction", data=data))
        assert isinstance(parsed, TransactionResponse)
        return parsed

    assert parse({"host_response_code": "511", "success": False}).retrieved
    assert not parse({"host_response_code": "", "success": False}).retrieved
    assert not parse({"error_reason": "NO_TRANSACTION"}).retrieved


def test_missing_success_reads_as_unknown_and_wrong_types_as_none() -> None:
    parsed = parse_terminal_message(
        Message(
            id="prchs1",
            event="purchase_response",
            data={"purchase_amount": "lots", "pos_ref_id": ["p"], "merchant_receipt_printed": 1},
        )
    )

    assert isinstance(parsed, TransactionResponse)
    assert None is parsed.success
    assert None is parsed.purchase_amount
    assert None is parsed.pos_ref_id
    assert None is parsed.merchant_receipt_printed


# -- property tests -----------------------------------------------------------------

_KNOWN_KEYS = sorted(
    {
        "success",
        "pos_ref_id",
        "tx",
        "schemes",
        "settle_by_acquirer",
        "enc",
        "hmac",
        "A",
        "pos_spi_auth_token",
        "purchase_amount",
        "surcharge_amount",
        "battery_level",
        "display_message_code",
        "display_message_text",
        "host_response_code",
        "zip_data",
        "basket",
        "store_code",
        "other_info",
        "operator_id_list",
        "pay_at_table_enabled",
        "bill_payment_history",
        "payment_summary",
        "payment_type",
        "tables",
        "table_id",
        "auth_code",
    }
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.from_regex(r"-?[0-9]{1,30}", fullmatch=True)
)
_keys = st.sampled_from(_KNOWN_KEYS) | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)
_objects = st.dictionaries(_keys, _json, max_size=8)
_events = st.sampled_from([e.value for e in Event]) | st.text(max_size=24)


@settings(max_examples=400, deadline=None)
@given(event=_events, data=st.none() | _objects)
def test_parse_terminal_message_raises_nothing_but_remote_protocol_error(
    event: str, data: dict[str, Any] | None
) -> None:
    message = Message(id="C1.0", event=event, data=data)
    try:
        parsed = parse_terminal_message(message)
    except RemoteProtocolError:
        return

    assert message.id == parsed.id
    assert (data or {}) == parsed.data


def _json_text_could_carry(data: object) -> bool:
    """Whether orjson can write ``data``: beyond 64-bit integers never arrive off the wire."""
    try:
        dumps(data)
    except TypeError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(event=st.sampled_from(sorted(REQUEST_CLASSES_BY_EVENT)), data=st.none() | _objects)
def test_reading_a_pos_request_raises_nothing_but_remote_protocol_error(
    event: str, data: dict[str, Any] | None
) -> None:
    try:
        request = parse_request(event, data)
    except RemoteProtocolError:
        return

    assert event == request.event
    if _json_text_could_carry(data):
        dumps(request.to_data())  # whatever is accepted can be sent on


_amounts = st.integers(min_value=0, max_value=MAX_AMOUNT)


def _option_names() -> list[str]:
    return [name for name, _ in ReceiptOptions().items()]


def _flag_names() -> list[str]:
    return [
        "print_merchant_copy",
        "prompt_for_customer_copy",
        "print_for_signature_required_transactions",
    ]


@st.composite
def _purchases(draw: st.DrawFn) -> PurchaseRequest:
    tip = draw(_amounts)
    cash = 0 if tip else draw(_amounts)
    return PurchaseRequest(
        pos_ref_id=draw(st.text(max_size=40)),
        purchase_amount=draw(_amounts),
        tip_amount=tip,
        cash_amount=cash,
        prompt_for_cashout=False if tip else draw(st.booleans()),
        surcharge_amount=draw(_amounts),
        options=draw(st.builds(ReceiptOptions, **dict.fromkeys(_option_names(), st.text()))),
        config=draw(st.builds(PrintingConfig, **dict.fromkeys(_flag_names(), st.booleans()))),
    )


@given(request=_purchases())
def test_purchase_round_trips_through_its_data_even_with_amounts_as_strings(
    request: PurchaseRequest,
) -> None:
    data = data_of(request)
    as_strings = {k: str(v) if type(v) is int else v for k, v in data.items()}

    assert request == PurchaseRequest.from_data(data)
    assert request == PurchaseRequest.from_data(as_strings)
    assert json.loads(dumps(data)) == data
