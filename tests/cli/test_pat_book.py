"""``pat serve``'s bill book (no Redis): what it answers, and the files it refuses."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import orjson
import pytest

from multipair.broker_schema.events import BillPaymentReported
from multipair.cli._base import Fail
from multipair.cli._pat import BillBook, load_bills
from multipair.client import Bill, BillError, OpenTable

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pat-bills.json"
LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"


def _book() -> BillBook:
    return load_bills(EXAMPLE)


def _payment(bill_id: str, table_id: str, cents: int) -> BillPaymentReported:
    return BillPaymentReported(
        instance_id=LANE,
        at=_dt.datetime.now(_dt.UTC),
        command_id=None,
        request_id="r-1",
        answer_by=_dt.datetime.now(_dt.UTC),
        bill_id=bill_id,
        table_id=table_id,
        operator_id="7",
        payment_type="card",
        amount_cents=cents,
        terminal_ref_id="t-1",
    )


@pytest.mark.parametrize(
    ("table_id", "operator_id", "bill_id", "expected"),
    [
        (
            "12",
            "7",
            "",
            Bill(bill_id="B-1012", table_id="12", total_cents=8450, outstanding_cents=8450),
        ),
        (
            "14",
            "12",
            "B-1014",
            Bill(bill_id="B-1014", table_id="14", total_cents=12000, outstanding_cents=7000),
        ),
        ("99", "7", "", BillError.INVALID_TABLE_ID),
        ("12", "7", "B-9999", BillError.INVALID_BILL_ID),
        ("12", "7", "B-1014", BillError.INVALID_BILL_ID),  # another table's bill
        ("12", "8", "", BillError.INVALID_OPERATOR_ID),
    ],
)
def test_a_bill_is_found_by_table_or_by_the_bill_named(
    table_id: str, operator_id: str, bill_id: str, expected: Bill | BillError
) -> None:
    answer = _book().get_bill(table_id, operator_id, bill_id, payment_flow_started=False)
    assert expected == answer


def test_open_tables_are_those_with_something_left_to_pay_and_none_for_a_stranger() -> None:
    book = _book()
    assert [
        OpenTable(table_id="12", label="Window, 4 guests", outstanding_cents=8450),
        OpenTable(table_id="14", label="Terrace", outstanding_cents=7000),
    ] == book.get_open_tables("7")
    assert [] == book.get_open_tables("8")


def test_a_payment_lowers_the_outstanding_amount_never_below_zero() -> None:
    book = _book()
    first = book.on_payment(_payment("B-1014", "14", 5000))
    second = book.on_payment(_payment("B-1014", "14", 5000))
    assert (2000, 0) == (
        first.outstanding_cents if isinstance(first, Bill) else first,
        second.outstanding_cents if isinstance(second, Bill) else second,
    )
    assert ["12"] == [t.table_id for t in book.get_open_tables("7")]
    assert BillError.INVALID_BILL_ID == book.on_payment(_payment("B-9", "99", 100))


def test_no_operators_lets_any_operator_in(tmp_path: Path) -> None:
    path = tmp_path / "bills.json"
    path.write_bytes(orjson.dumps({"bills": [{"table_id": "1", "bill_id": "B", "total_cents": 5}]}))
    book = load_bills(path)
    assert "Table 1" == book.get_open_tables("anyone")[0].label


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not json", "is not JSON"),
        (b"[]", '"bills" list'),
        (b'{"bills": [], "operators": [7]}', '"operators"'),
        (b'{"bills": [{"table_id": "1", "bill_id": "B"}]}', "total_cents"),
        (b'{"bills": [{"table_id": "1", "bill_id": "B", "total_cents": 12.5}]}', "total_cents"),
        (b'{"bills": [{"table_id": "", "bill_id": "B", "total_cents": 5}]}', "table_id"),
        (
            b'{"bills": [{"table_id": "1", "bill_id": "B", "total_cents": 5, '
            b'"outstanding_cents": 6}]}',
            "outstanding_cents",
        ),
        (b'{"bills": [{"table_id": "1", "bill_id": "B", "total_cents": 5, "tip": 1}]}', "'tip'"),
        (
            b'{"bills": [{"table_id": "1", "bill_id": "B", "total_cents": 5}, '
            b'{"table_id": "1", "bill_id": "C", "total_cents": 5}]}',
            "repeats",
        ),
    ],
)
def test_a_bad_bills_file_is_refused_saying_what_is_wrong(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "bills.json"
    path.write_bytes(content)
    with pytest.raises(Fail) as caught:
        load_bills(path)
    assert says in caught.value.message
