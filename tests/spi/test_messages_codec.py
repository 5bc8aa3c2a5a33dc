"""The declarative codec (spi/messages/_wire.py): one declaration, generic read and write.

Every request class round-trips through its own data; unknown keys are
ignored; nullable, flag, local, conditional, mirrored and flattened fields
behave as declared. The catalogue's wire vectors are in test_messages.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from multipair.exceptions import InvalidRequest, RemoteProtocolError
from multipair.spi import messages
from multipair.spi.envelope import JsonObject, Message, dumps
from multipair.spi.messages import (
    MAX_AMOUNT,
    REQUEST_CLASSES_BY_EVENT,
    CashoutRequest,
    Event,
    PrintingConfig,
    ReceiptOptions,
    Request,
    SetPosInfoRequest,
    TerminalStatus,
    parse_request,
    parse_terminal_message,
)
from multipair.spi.messages._wire import REQUIRED, Checked, Kind, Spec, decode, encode, specs, wire

# -- every request class round-trips ---------------------------------------------------


def _strategy(spec: Spec) -> st.SearchStrategy[Any]:
    """Values a field of this kind may be built with."""
    if spec.meta.length is not None:
        size = spec.meta.length[0]
        base: st.SearchStrategy[Any] = st.text(min_size=size, max_size=size)
    elif spec.kind is Kind.TEXT:
        base = st.text(max_size=12)
    elif spec.kind is Kind.AMOUNT:
        base = st.just(0) | st.integers(min_value=0, max_value=MAX_AMOUNT)
    elif spec.kind is Kind.FLAG:
        base = st.booleans()
    elif spec.kind is Kind.TEXTS:
        base = st.lists(st.text(max_size=4), max_size=3).map(tuple)
    elif spec.kind is Kind.OBJECT:
        base = st.dictionaries(
            st.text(max_size=4), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=4)
        )
    else:
        assert spec.record is not None
        record = st.builds(
            spec.record, **{s.name: _strategy(s) for s in specs(spec.record) if s.init}
        )
        base = st.lists(record, max_size=2).map(tuple) if spec.kind is Kind.RECORDS else record
    return st.none() | base if spec.nullable else base


def _requests(cls: type[Request]) -> st.SearchStrategy[Request]:
    return st.builds(cls, **{s.name: _strategy(s) for s in specs(cls) if s.init})


def _as_read_back(request: Request) -> Request:
    """What the receiver can know: fields that were not sent take their read default."""
    changes: dict[str, object] = {}
    for spec in specs(type(request)):
        meta = spec.meta
        conditions = [c for c in (meta.only_if, meta.sent_if) if c is not None]
        unsent = any(getattr(request, name) != value for name, value in conditions)
        if spec.init and (meta.local or unsent) and spec.default is not None:
            changes[spec.name] = spec.default()
        elif spec.kind is Kind.GROUP and meta.only is not None:  # flags this request may not send
            group = getattr(request, spec.name)
            not_allowed = {s.name: False for s in specs(type(group)) if s.name not in meta.only}
            changes[spec.name] = dataclasses.replace(group, **not_allowed)
    return dataclasses.replace(request, **changes)  # type: ignore[type-var]


@pytest.mark.parametrize("cls", sorted(set(REQUEST_CLASSES_BY_EVENT.values()), key=str))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_request_reads_back_from_its_data_as_far_as_it_was_sent(
    cls: type[Request], data: st.DataObject
) -> None:
    try:
        request = data.draw(_requests(cls))
    except InvalidRequest:  # a rule across fields (tip with cashout)
        reject()
    sent = request.to_data()

    assert _as_read_back(request) == cls.from_data(sent)
    assert sent is None or json.loads(dumps(sent)) == sent


@pytest.mark.parametrize("cls", sorted(set(REQUEST_CLASSES_BY_EVENT.values()), key=str))
def test_unknown_keys_are_ignored_when_reading(cls: type[Request]) -> None:
    request = _minimal(cls)
    sent = request.to_data() or {}

    assert cls.from_data(sent) == cls.from_data({**sent, "not_in_the_protocol": [1, {"x": 2}]})


def _minimal(cls: type[Request]) -> Request:
    """An instance with every required field set to a small valid value."""
    values: dict[str, object] = {}
    for spec in specs(cls):
        if spec.init and _required(cls, spec.name):
            values[spec.name] = {Kind.TEXT: "123456", Kind.AMOUNT: 1, Kind.FLAG: True}[spec.kind]
    return cls(**values)


def _required(cls: type[Any], name: str) -> bool:
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# -- nullable and flag fields ----------------------------------------------------------


def test_a_nullable_field_sends_null_and_reads_null_back_as_none() -> None:
    request = SetPosInfoRequest(pos_version="1", pos_vendor_id="v", library_version="2")
    sent = request.to_data()

    assert sent is not None
    assert (None, None) == (sent["spice_version"], sent["other_info"]["spice_version"])
    assert None is SetPosInfoRequest.from_data(sent).spice_version


def test_null_for_a_field_that_is_not_nullable_counts_as_missing() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^cash: cash_amount is missing$"):
        CashoutRequest.from_data({"pos_ref_id": "c", "cash_amount": None})


def test_flags_are_read_from_booleans_or_their_strings_and_refused_otherwise() -> None:
    read = CashoutRequest.from_data(
        {"pos_ref_id": "c", "cash_amount": 1, "print_merchant_copy": "TRUE"}
    )

    assert PrintingConfig(print_merchant_copy=True) == read.config
    with pytest.raises(RemoteProtocolError, match="print_merchant_copy is not a boolean"):
        CashoutRequest.from_data({"pos_ref_id": "c", "cash_amount": 1, "print_merchant_copy": 1})


def test_a_flag_built_from_something_else_than_a_bool_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="print_merchant_copy must be a bool, got int"):
        PrintingConfig(print_merchant_copy=1)  # type: ignore[arg-type]


def test_receipt_fields_are_flattened_flags_first_in_the_order_js_adds_them() -> None:
    request = CashoutRequest(
        pos_ref_id="c",
        cash_amount=1,
        options=ReceiptOptions(merchant_receipt_footer="bye"),
        config=PrintingConfig(print_merchant_copy=True, prompt_for_customer_copy=True),
    )
    expected = [
        "pos_ref_id",
        "cash_amount",
        "surcharge_amount",
        "prompt_for_customer_copy",
        "print_merchant_copy",
        "customer_receipt_header",
        "customer_receipt_footer",
        "merchant_receipt_header",
        "merchant_receipt_footer",
    ]

    assert expected == list(request.to_data() or {})


# -- the codec's options on a toy declaration ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Inner(Checked):
    a: bool = field(default=False, metadata=wire(omit_empty=True))
    b: bool = field(default=False, metadata=wire(omit_empty=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Toy(Checked):
    event: ClassVar[str] = "toy"

    on: bool = field(default=False, metadata=wire(read_default=REQUIRED))
    name: str = field(default="", metadata=wire(omit_empty=True))
    code: str = field(default="", metadata=wire(path=("nested", "code"), mirror=("code_again",)))
    count: int = field(default=0, metadata=wire(only_if=("on", True)))
    total: int = field(default=0, metadata=wire(sent_if=("on", True)))
    note: str = field(default="", metadata=wire(local=True))
    inner: _Inner = field(
        default_factory=_Inner, metadata=wire(flatten=True, only=frozenset({"b"}))
    )


def _toy(data: JsonObject | None) -> _Toy:
    return decode(_Toy, "toy", data)


def test_toy_writes_in_declaration_order_with_paths_mirrors_conditions_and_groups() -> None:
    toy = _Toy(on=True, code="x", count=2, total=3, note="mine", inner=_Inner(a=True, b=True))
    expected = {
        "on": True,
        "nested": {"code": "x"},
        "count": 2,
        "total": 3,
        "b": True,
        "code_again": "x",
    }

    assert json.dumps(expected) == json.dumps(encode(toy))


def test_toy_off_sends_neither_only_if_nor_sent_if_fields() -> None:
    assert {"on": False, "nested": {"code": ""}, "code_again": ""} == encode(_Toy(count=2, total=3))


def test_toy_reads_sent_if_fields_whenever_present_and_only_if_fields_only_when_on() -> None:
    read = _toy({"on": False, "count": 2, "total": 3, "note": "theirs"})

    assert _Toy(on=False, total=3) == read


def test_toy_group_only_filters_what_is_sent_and_every_group_key_is_read() -> None:
    toy = _Toy(inner=_Inner(a=True))

    assert "a" not in encode(toy)
    assert toy == _toy({"on": False, "a": True})


def test_toy_read_default_required_makes_a_defaulted_field_required() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^toy: on is missing$"):
        _toy({})


def test_toy_nested_path_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^toy: nested is missing or not an object$"):
        _toy({"on": True, "nested": 5})


def test_an_annotation_without_a_wire_form_is_refused_at_declaration() -> None:
    @dataclass(frozen=True)
    class _Bad:
        value: float = 0.0

    with pytest.raises(TypeError, match="no wire form"):
        specs(_Bad)


# -- terminal messages: declared fields, read leniently ----------------------------------


def test_terminal_message_fields_read_their_keys_and_wrong_types_as_none() -> None:
    parsed = parse_terminal_message(
        Message(
            id="C1",
            event="terminal_status",
            data={"status": "IDLE", "battery_level": "87", "charging": "yes", "success": True},
        )
    )

    assert (
        TerminalStatus(
            id="C1",
            data=parsed.data,
            status="IDLE",
            battery_level=87,
            charging=None,
            success=True,
        )
        == parsed
    )


def test_a_nested_transaction_is_parsed_with_the_outer_id_and_event() -> None:
    parsed = parse_terminal_message(
        Message(
            id="gt3",
            event="get_transaction_response",
            data={"success": True, "tx": {"success": True, "purchase_amount": 10}},
        )
    )

    assert isinstance(parsed, messages.GetTransactionResponse)
    assert parsed.tx is not None
    assert ("gt3", "get_transaction_response", 10) == (
        parsed.tx.id,
        parsed.tx.event,
        parsed.tx.purchase_amount,
    )


@pytest.mark.parametrize(
    ("event", "data", "message"),
    [
        ("key_request", {"enc": {"A": "ab"}}, "key_request without enc.A and hmac.A strings"),
        ("provision_pos_spi_token", {"pos_spi_auth_token": ""}, "without a pos_spi_auth_token"),
    ],
)
def test_a_terminal_message_without_its_required_strings_is_the_terminals_fault(
    event: str, data: JsonObject, message: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_terminal_message(Message(id="1", event=event, data=data))


# -- what the simulated terminal receives ----------------------------------------------


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("purchase", {"pos_ref_id": "p", "purchase_amount": 100}),
        ("refund", {"pos_ref_id": "r", "refund_amount": "100"}),
        ("cash", {"pos_ref_id": "c", "cash_amount": 100, "surcharge_amount": None}),
        ("moto_purchase", {"pos_ref_id": "m", "purchase_amount": 5}),
        ("settle", {"print_merchant_copy": True}),
        ("settlement_enquiry", {}),
        ("get_transaction", {"pos_ref_id": "p"}),
        ("get_last_transaction", None),
        ("reverse_transaction", {"pos_ref_id": "p"}),
        ("account_verify", {"pos_ref_id": "a"}),
        ("preauth", {"pos_ref_id": "a", "preauth_amount": 1}),
        ("completion", {"pos_ref_id": "a", "preauth_id": "1", "completion_amount": 1}),
        (
            "purchase_zip",
            {"pos_ref_id": "z", "purchase_amount": 1, "zip_data": {"store_code": "s"}},
        ),
        ("cancel_transaction", None),
    ],
)
def test_parse_request_reads_what_the_terminal_receives_into_its_class(
    event: str, data: JsonObject | None
) -> None:
    request = parse_request(event, data)

    assert Event(event) == request.event
    assert type(request) is REQUEST_CLASSES_BY_EVENT[event]
