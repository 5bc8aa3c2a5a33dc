"""Receipt options and printing flags, flattened into transaction requests (PROTOCOL.md §7.1).

Declared in the 2.8.3 wire order: the flags a request may carry go out
first, and only when true; then the four option texts, customer first. The
zip requests follow 2.9 instead (§13.13): options merchant first
(:data:`V29_OPTIONS_ORDER`), then flags. Which flags each request type may
carry is the §7.1 table: :data:`ALL_FLAGS`, :data:`ZIP_FLAGS`, :data:`SETTLE_FLAGS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from multipair.spi.messages._wire import Checked, encode, wire

__all__ = [
    "ALL_FLAGS",
    "AS_ALL_FLAGS",
    "AS_OPTIONS",
    "AS_OPTIONS_V29",
    "AS_SETTLE_FLAGS",
    "AS_ZIP_FLAGS",
    "SETTLE_FLAGS",
    "V29_OPTIONS_ORDER",
    "ZIP_FLAGS",
    "PrintingConfig",
    "ReceiptOptions",
]

_PROMPT_FOR_CUSTOMER_COPY: Final = "prompt_for_customer_copy"
_PRINT_FOR_SIGNATURE: Final = "print_for_signature_required_transactions"
_PRINT_MERCHANT_COPY: Final = "print_merchant_copy"

ALL_FLAGS: Final = frozenset(
    {_PROMPT_FOR_CUSTOMER_COPY, _PRINT_FOR_SIGNATURE, _PRINT_MERCHANT_COPY}
)
ZIP_FLAGS: Final = frozenset({_PROMPT_FOR_CUSTOMER_COPY, _PRINT_MERCHANT_COPY})
SETTLE_FLAGS: Final = frozenset({_PRINT_MERCHANT_COPY})

V29_OPTIONS_ORDER: Final = (
    "merchant_receipt_header",
    "merchant_receipt_footer",
    "customer_receipt_header",
    "customer_receipt_footer",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptOptions(Checked):
    """Receipt header and footer texts (§7.1); JS sends all four, ``""`` when unset."""

    customer_receipt_header: str = ""
    customer_receipt_footer: str = ""
    merchant_receipt_header: str = ""
    merchant_receipt_footer: str = ""

    def items(self) -> list[tuple[str, str]]:
        """The four keys in the 2.8.3 order: customer header, footer, merchant header, footer."""
        return list(encode(self).items())


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintingConfig(Checked):
    """What the terminal prints itself (§7.1), in the order spi-client-js adds the flags.

    Each flag is sent only when true.
    """

    prompt_for_customer_copy: bool = field(default=False, metadata=wire(omit_empty=True))
    print_for_signature_required_transactions: bool = field(
        default=False, metadata=wire(omit_empty=True)
    )
    print_merchant_copy: bool = field(default=False, metadata=wire(omit_empty=True))

    def flags(self, allowed: frozenset[str]) -> list[tuple[str, bool]]:
        """The flags that are on and allowed, in wire order."""
        return [(key, True) for key in encode(self) if key in allowed]


# Field metadata of a request's receipt fields: options and flags flattened into its data.
AS_OPTIONS: Final = wire(flatten=True)
AS_OPTIONS_V29: Final = wire(flatten=True, order=V29_OPTIONS_ORDER)
AS_ALL_FLAGS: Final = wire(flatten=True, only=ALL_FLAGS)
AS_ZIP_FLAGS: Final = wire(flatten=True, only=ZIP_FLAGS)
AS_SETTLE_FLAGS: Final = wire(flatten=True, only=SETTLE_FLAGS)
