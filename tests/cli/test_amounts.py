"""Dollars as people type them become exact integer cents, or a clear refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multipair.broker_schema import MAX_CENTS
from multipair.cli.amounts import AmountError, format_cents, parse_amount


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("12.50", 1250),
        ("0.1", 10),
        ("12", 1200),
        ("12.5", 1250),
        (".5", 50),
        ("5.", 500),
        ("0.01", 1),
        ("0.29", 29),  # 0.29 * 100 is 28.999999999999996 in floating point
        ("1.15", 115),
        ("4.35", 435),
        ("9999999.99", MAX_CENTS),
    ],
)
def test_dollars_become_exact_cents(text: str, cents: int) -> None:
    assert cents == parse_amount(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("12.345", "more than 2 decimal places"),
        ("0.001", "more than 2 decimal places"),
        ("12.500", "more than 2 decimal places"),
        ("-1", "negative"),
        ("-0.01", "negative"),
        ("1e3", "not an amount"),
        ("1E3", "not an amount"),
        ("NaN", "not an amount"),
        ("nan", "not an amount"),
        ("Infinity", "not an amount"),
        ("inf", "not an amount"),
        ("", "not an amount"),
        (".", "not an amount"),
        (" 1", "not an amount"),
        ("1 ", "not an amount"),
        ("+1", "not an amount"),
        ("1_000", "not an amount"),
        ("1,000", "not an amount"),
        ("１２", "not an amount"),  # full-width digits
        ("0x10", "not an amount"),
        ("12.5.0", "not an amount"),
        ("$12", "not an amount"),
        ("10000000.00", "more than the largest amount"),
    ],
)
def test_anything_but_plain_dollars_and_cents_is_refused(text: str, why: str) -> None:
    with pytest.raises(AmountError) as refused:
        parse_amount(text)
    assert why in str(refused.value)


def test_zero_is_refused_unless_the_caller_allows_it() -> None:
    with pytest.raises(AmountError, match="zero"):
        parse_amount("0.00")
    assert (0, 0) == (parse_amount("0", allow_zero=True), parse_amount("0.00", allow_zero=True))


@given(st.integers(min_value=1, max_value=MAX_CENTS))
def test_every_amount_round_trips_through_its_dollar_text(cents: int) -> None:
    assert cents == parse_amount(f"{cents // 100}.{cents % 100:02d}")


@pytest.mark.parametrize(
    ("cents", "text"),
    [(1250, "$12.50"), (5, "$0.05"), (123456789, "$1,234,567.89"), (-5, "-$0.05")],
)
def test_cents_are_shown_as_dollars(cents: int, text: str) -> None:
    assert text == format_cents(cents)
