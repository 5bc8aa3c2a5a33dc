"""Dollar amounts typed by people, turned into the contract's integer cents.

Rules this module keeps (docs/broker-schema.md, "Value rules": money is
integer cents):

- The text is plain decimal digits with at most two after the point:
  ``12``, ``12.5``, ``12.50``, ``.5``. Nothing else is an amount: no sign,
  no exponent (``1e3``), no ``NaN`` or ``Infinity``, no thousands separators
  or underscores, no spaces. A typo must never become a different charge.
- The conversion is exact (:class:`decimal.Decimal`, never ``float``), and a
  third decimal place is refused rather than rounded: ``12.345`` is a
  question for the operator, not for us.
- The result is between 0 and :data:`~multipair.broker_schema.MAX_CENTS`;
  whether 0 is allowed is the caller's choice (a tip may be 0, a purchase
  may not).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

from multipair.broker_schema import MAX_CENTS

__all__ = ["AmountError", "format_cents", "parse_amount"]

_AMOUNT: Final = re.compile(r"(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]*))?")


class AmountError(ValueError):
    """Text that is not an amount of dollars and cents; the message says why."""


def parse_amount(text: str, *, allow_zero: bool = False) -> int:
    """``"12.50"`` -> ``1250``: dollars as typed, to integer cents, exactly.

    Raises :class:`AmountError` with a sentence for the operator.
    """
    if text.startswith("-"):
        raise AmountError(f"{text!r} is negative; amounts are 0.01 or more")
    match = _AMOUNT.fullmatch(text)
    if match is None or not (match["whole"] or match["frac"]):
        raise AmountError(
            f"{text!r} is not an amount: write dollars like 12.50 "
            "(digits, at most 2 after the point; no sign or exponent)"
        )
    frac = match["frac"] or ""
    if len(frac) > 2:
        raise AmountError(f"{text!r} has more than 2 decimal places; amounts are whole cents")
    cents = int(Decimal(f"{match['whole'] or '0'}.{frac or '0'}").scaleb(2))
    if cents > MAX_CENTS:
        raise AmountError(f"{text!r} is more than the largest amount, {format_cents(MAX_CENTS)}")
    if cents == 0 and not allow_zero:
        raise AmountError(f"{text!r} is zero; the amount must be at least 0.01")
    return cents


def format_cents(cents: int) -> str:
    """``1250`` -> ``"$12.50"`` (``"-$0.05"`` for negatives)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"
