"""Typed SPI message bodies: what the POS sends and what the terminal answers (PROTOCOL.md §7).

Rules this module keeps:

- Every request, reply and parsed message is a frozen, slotted, keyword-only
  dataclass. Requests validate themselves when built: amounts are ``int``
  cents from 0 to :data:`MAX_AMOUNT` (never ``bool``), text is encodable, so
  whatever builds can be sent; tip and cashout exclude each other (§7.2), an
  auth code has exactly 6 characters (§7.8); anything else raises
  :class:`~multipair.exceptions.InvalidRequest`.
- ``to_data()`` returns the ``data`` object with the keys in the order
  spi-client-js 2.8.3 sends them (vectors/request_messages.json), except the
  zip requests, which follow 2.9 (§13.13). Printing flags go out only when
  true and only on the request types §7.1 allows them on.
- ``from_data()`` is the terminal side's reader of a POS request: lenient
  about representation (``"2500"`` is 2500), strict about substance: a
  missing required field or a value that cannot be what it should be raises
  :class:`~multipair.exceptions.RemoteProtocolError`.
- Ids are a prefix plus one counter shared by every request (§2.5); a reply
  reuses the id of the message it answers.
- :func:`parse_terminal_message` never raises anything but
  ``RemoteProtocolError``, and that only when a message cannot mean anything
  (a ``key_request`` without its ``A`` values). A field of the wrong type
  reads as ``None``; the raw ``data`` is kept on every parsed message.
- No I/O, no clock: this is protocol core (STYLE.md 1).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, Final, NoReturn, Self, TypeAlias, TypeVar

from multipair.exceptions import InvalidRequest, LocalProtocolError, RemoteProtocolError
from multipair.spi.envelope import JsonObject, Message

__all__ = [
    "MAX_AMOUNT",
    "REQUEST_CLASSES_BY_EVENT",
    "TRANSACTION_REQUESTS",
    "AccountVerifyRequest",
    "AuthCodeAdviceRequest",
    "AuthCodeRequired",
    "BatteryLevelChanged",
    "BillDetailsReply",
    "BillPaymentFlowEndedAck",
    "CancelResponse",
    "CancelTransactionRequest",
    "CashoutRequest",
    "DropKeys",
    "DropKeysRequest",
    "ErrorMessage",
    "Event",
    "GetLastTransactionRequest",
    "GetTerminalConfigurationRequest",
    "GetTerminalStatusRequest",
    "GetTransactionRequest",
    "GetTransactionResponse",
    "KeyCheck",
    "KeyRequest",
    "MotoPurchaseRequest",
    "OpenTable",
    "OpenTablesReply",
    "PairRequest",
    "PairResponse",
    "PayAtTableMessage",
    "PaymentHistoryEntry",
    "Ping",
    "PingRequest",
    "Pong",
    "PongReply",
    "PosSpiToken",
    "PreauthCancellationRequest",
    "PreauthCompletionRequest",
    "PreauthExtendRequest",
    "PreauthOpenRequest",
    "PreauthPartialCancellationRequest",
    "PreauthTopupRequest",
    "PrintRequest",
    "PrintResponse",
    "PrintingConfig",
    "PurchaseRequest",
    "ReceiptOptions",
    "RefundRequest",
    "Request",
    "RequestIds",
    "RequestUseNextKeys",
    "ReversalRequest",
    "SchemeTotals",
    "SetPosInfoRequest",
    "SetPosInfoResponse",
    "SetTableConfigRequest",
    "SettleRequest",
    "SettlementEnquiryRequest",
    "SettlementResponse",
    "SignatureAcceptRequest",
    "SignatureDeclineRequest",
    "SignatureRequired",
    "TerminalConfiguration",
    "TerminalMessage",
    "TerminalStatus",
    "TransactionRequest",
    "TransactionResponse",
    "TxType",
    "TxnUpdate",
    "UnknownMessage",
    "ZipPurchaseRequest",
    "ZipRefundRequest",
    "as_bool",
    "as_int",
    "as_str",
    "build_message",
    "parse_request",
    "parse_terminal_message",
]


class Event(StrEnum):
    """Every event name on the wire (Appendix B, §7.23, §13.10)."""

    # Pairing, keys, liveness (§4, §5)
    PAIR_REQUEST = "pair_request"
    KEY_REQUEST = "key_request"
    KEY_RESPONSE = "key_response"
    KEY_CHECK = "key_check"
    PAIR_RESPONSE = "pair_response"
    DROP_KEYS = "drop_keys"
    LOGIN_REQUEST = "login_request"
    LOGIN_RESPONSE = "login_response"
    PING = "ping"
    PONG = "pong"
    REQUEST_USE_NEXT_KEYS = "request_use_next_keys"
    RESPONSE_USE_NEXT_KEYS = "response_use_next_keys"
    # Transactions (§7.2-7.17)
    PURCHASE = "purchase"
    PURCHASE_RESPONSE = "purchase_response"
    REFUND = "refund"
    REFUND_RESPONSE = "refund_response"
    CASH = "cash"
    CASH_RESPONSE = "cash_response"
    MOTO_PURCHASE = "moto_purchase"
    MOTO_PURCHASE_RESPONSE = "moto_purchase_response"
    CANCEL_TRANSACTION = "cancel_transaction"
    CANCEL_RESPONSE = "cancel_response"
    SIGNATURE_REQUIRED = "signature_required"
    SIGNATURE_ACCEPT = "signature_accept"
    SIGNATURE_DECLINE = "signature_decline"
    AUTHORISATION_CODE_REQUIRED = "authorisation_code_required"
    AUTHORISATION_CODE_ADVICE = "authorisation_code_advice"
    TXN_UPDATE_MESSAGE = "txn_update_message"
    GET_TRANSACTION = "get_transaction"
    GET_TRANSACTION_RESPONSE = "get_transaction_response"
    GET_LAST_TRANSACTION = "get_last_transaction"
    LAST_TRANSACTION = "last_transaction"
    REVERSE_TRANSACTION = "reverse_transaction"
    REVERSE_TRANSACTION_RESPONSE = "reverse_transaction_response"
    SETTLE = "settle"
    SETTLE_RESPONSE = "settle_response"
    SETTLEMENT_ENQUIRY = "settlement_enquiry"
    SETTLEMENT_ENQUIRY_RESPONSE = "settlement_enquiry_response"
    ACCOUNT_VERIFY = "account_verify"
    ACCOUNT_VERIFY_RESPONSE = "account_verify_response"
    PREAUTH = "preauth"
    PREAUTH_RESPONSE = "preauth_response"
    PREAUTH_TOPUP = "preauth_topup"
    PREAUTH_TOPUP_RESPONSE = "preauth_topup_response"
    PREAUTH_PARTIAL_CANCELLATION = "preauth_partial_cancellation"
    PREAUTH_PARTIAL_CANCELLATION_RESPONSE = "preauth_partial_cancellation_response"
    PREAUTH_EXTEND = "preauth_extend"
    PREAUTH_EXTEND_RESPONSE = "preauth_extend_response"
    PREAUTH_CANCELLATION = "preauth_cancellation"
    PREAUTH_CANCELLATION_RESPONSE = "preauth_cancellation_response"
    COMPLETION = "completion"
    COMPLETION_RESPONSE = "completion_response"
    PURCHASE_ZIP = "purchase_zip"
    PURCHASE_ZIP_RESPONSE = "purchase_zip_response"
    REFUND_ZIP = "refund_zip"
    REFUND_ZIP_RESPONSE = "refund_zip_response"
    # Terminal services (§7.18-7.21)
    PRINT = "print"
    PRINT_RESPONSE = "print_response"
    GET_TERMINAL_STATUS = "get_terminal_status"
    TERMINAL_STATUS = "terminal_status"
    BATTERY_LEVEL_CHANGED = "battery_level_changed"
    GET_TERMINAL_CONFIGURATION = "get_terminal_configuration"
    TERMINAL_CONFIGURATION = "terminal_configuration"
    SET_POS_INFO = "set_pos_info"
    SET_POS_INFO_RESPONSE = "set_pos_info_response"
    # Pay at table (§7.23)
    GET_TABLE_CONFIG = "get_table_config"
    SET_TABLE_CONFIG = "set_table_config"
    GET_BILL_DETAILS = "get_bill_details"
    BILL_DETAILS = "bill_details"
    BILL_PAYMENT = "bill_payment"
    GET_OPEN_TABLES = "get_open_tables"
    OPEN_TABLES = "open_tables"
    BILL_PAYMENT_FLOW_ENDED = "bill_payment_flow_ended"
    BILL_PAYMENT_FLOW_ENDED_ACK = "bill_payment_flow_ended_ack"
    # 2.9.12 (§13.10) and errors (§9)
    PROVISION_POS_SPI_TOKEN = "provision_pos_spi_token"  # noqa: S105 an event name, not a secret
    ERROR = "error"


class TxType(StrEnum):
    """The kind of transaction a POS runs; one request class each (:data:`TRANSACTION_REQUESTS`)."""

    PURCHASE = "purchase"
    REFUND = "refund"
    CASHOUT = "cashout"
    MOTO = "moto"
    SETTLE = "settle"
    SETTLEMENT_ENQUIRY = "settlement_enquiry"
    GET_TRANSACTION = "get_transaction"
    GET_LAST_TRANSACTION = "get_last_transaction"
    REVERSAL = "reversal"
    ACCOUNT_VERIFY = "account_verify"
    PREAUTH = "preauth"
    PREAUTH_TOPUP = "preauth_topup"
    PREAUTH_PARTIAL_CANCELLATION = "preauth_partial_cancellation"
    PREAUTH_EXTEND = "preauth_extend"
    PREAUTH_CANCELLATION = "preauth_cancellation"
    COMPLETION = "completion"
    ZIP_PURCHASE = "zip_purchase"
    ZIP_REFUND = "zip_refund"


# ---------------------------------------------------------------------------
# Lenient readers of terminal values (§2.4: "Parse leniently")
# ---------------------------------------------------------------------------

_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")


def as_int(value: object) -> int | None:
    """An integer from an int, a whole float or a decimal string; ``None`` for anything else.

    ``bool`` is not a number here, and only ASCII digits count (``int()``
    alone would also take ``"1_000"`` and non-Latin digits).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER_TEXT.fullmatch(text):
            return None
        try:
            return int(text)
        except ValueError:  # more digits than Python converts (sys.int_info)
            return None
    return None


def as_bool(value: object) -> bool | None:
    """A JSON boolean, or the string ``"true"``/``"false"`` in any case; else ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return None


def as_str(value: object) -> str | None:
    """A string as is, an integer as its digits (ids may come as numbers); else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # too many digits to print
            return None
    return None


# ---------------------------------------------------------------------------
# Receipt options, printing config, ids
# ---------------------------------------------------------------------------

_PROMPT_FOR_CUSTOMER_COPY: Final = "prompt_for_customer_copy"
_PRINT_FOR_SIGNATURE: Final = "print_for_signature_required_transactions"
_PRINT_MERCHANT_COPY: Final = "print_merchant_copy"

# Which printing flags each request type may carry (§7.1 table).
_ALL_FLAGS: Final = frozenset(
    {_PROMPT_FOR_CUSTOMER_COPY, _PRINT_FOR_SIGNATURE, _PRINT_MERCHANT_COPY}
)
_ZIP_FLAGS: Final = frozenset({_PROMPT_FOR_CUSTOMER_COPY, _PRINT_MERCHANT_COPY})
_SETTLE_FLAGS: Final = frozenset({_PRINT_MERCHANT_COPY})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptOptions:
    """Receipt header and footer texts (§7.1); JS sends all four, ``""`` when unset."""

    customer_receipt_header: str = ""
    customer_receipt_footer: str = ""
    merchant_receipt_header: str = ""
    merchant_receipt_footer: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_text(f.name, getattr(self, f.name))

    def items(self) -> list[tuple[str, str]]:
        """The four keys in the 2.8.3 order: customer header, footer, merchant header, footer."""
        return [
            ("customer_receipt_header", self.customer_receipt_header),
            ("customer_receipt_footer", self.customer_receipt_footer),
            ("merchant_receipt_header", self.merchant_receipt_header),
            ("merchant_receipt_footer", self.merchant_receipt_footer),
        ]

    def items_v29(self) -> list[tuple[str, str]]:
        """The four keys in the order 2.9 uses on zip requests: merchant first (§13.13)."""
        return [
            ("merchant_receipt_header", self.merchant_receipt_header),
            ("merchant_receipt_footer", self.merchant_receipt_footer),
            ("customer_receipt_header", self.customer_receipt_header),
            ("customer_receipt_footer", self.customer_receipt_footer),
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintingConfig:
    """What the terminal prints itself (§7.1). Each flag is sent only when true."""

    print_merchant_copy: bool = False
    prompt_for_customer_copy: bool = False
    print_for_signature_required_transactions: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_flag(f.name, getattr(self, f.name))

    def flags(self, allowed: frozenset[str]) -> list[tuple[str, bool]]:
        """The flags that are on and allowed, in the order spi-client-js adds them."""
        on = [
            (_PROMPT_FOR_CUSTOMER_COPY, self.prompt_for_customer_copy),
            (_PRINT_FOR_SIGNATURE, self.print_for_signature_required_transactions),
            (_PRINT_MERCHANT_COPY, self.print_merchant_copy),
        ]
        return [(key, True) for key, value in on if value and key in allowed]


def _with_receipt(
    data: JsonObject, options: ReceiptOptions, config: PrintingConfig, allowed: frozenset[str]
) -> JsonObject:
    """Append printing flags, then the four options: the 2.8.3 order of every vector."""
    data.update(config.flags(allowed))
    data.update(options.items())
    return data


class RequestIds:
    """Message ids for POS requests: a prefix plus one counter shared by all of them (§2.5).

    The counter starts at 1 (or ``start``) and moves by one per id; unlike
    spi-client-js 2.8 a refund does not burn two values (§11).
    """

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        self._next = start

    @property
    def counter(self) -> int:
        """The number the next id will carry."""
        return self._next

    def next(self, prefix: str) -> str:
        """Return ``prefix`` followed by the counter, and advance the counter."""
        value = self._next
        self._next += 1
        return f"{prefix}{value}"


# ---------------------------------------------------------------------------
# Validation (POS side) and the reader of request data (terminal side)
# ---------------------------------------------------------------------------


# The largest integer a JS peer reads exactly (Number.MAX_SAFE_INTEGER); orjson
# cannot even write integers beyond 64 bits, so a bigger amount must not build.
MAX_AMOUNT: Final = 2**53 - 1


def _check_amount(name: str, value: object, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"{name} must be an int number of cents, got {type(value).__name__} {value!r:.40}"
        )
    if value < 0:
        raise InvalidRequest(f"{name} must be >= 0, got {value}")
    if value > MAX_AMOUNT:
        raise InvalidRequest(f"{name} must be <= {MAX_AMOUNT}")


def _check_text(name: str, value: object, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not sendable as JSON text
        raise InvalidRequest(f"{name} is not valid Unicode text") from None


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a bool, got {type(value).__name__}")


class _Reader:
    """Reads the ``data`` of one POS request for the terminal side.

    A missing required key, or a present value that is not what it should be,
    raises ``RemoteProtocolError``; ``null`` counts as missing. Numbers may
    come as decimal strings and booleans as ``"true"``/``"false"``.
    """

    __slots__ = ("_data", "_where")

    def __init__(self, where: str, data: Mapping[str, Any] | None) -> None:
        self._where = where
        self._data: Mapping[str, Any] = data if data is not None else {}

    def _fail(self, key: str, problem: str) -> NoReturn:
        raise RemoteProtocolError(f"{self._where}: {key} {problem}")

    def is_null(self, key: str) -> bool:
        """Whether ``key`` is present with the value ``null``."""
        return key in self._data and self._data[key] is None

    def text(self, key: str, default: str | None = None) -> str:
        value = self._data.get(key)
        if value is None:
            if default is None:
                self._fail(key, "is missing")
            return default
        text = as_str(value)
        if text is None:
            self._fail(key, f"is not a string: {type(value).__name__}")
        return text

    def nullable_text(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.text(key)

    def amount(self, key: str, default: int | None = None) -> int:
        value = self._data.get(key)
        if value is None:
            if default is None:
                self._fail(key, "is missing")
            return default
        number = as_int(value)
        if number is None:
            self._fail(key, f"is not an integer: {value!r:.40}")
        return number

    def flag(self, key: str, default: bool | None = False) -> bool:
        value = self._data.get(key)
        if value is None:
            if default is None:
                self._fail(key, "is missing")
            return default
        parsed = as_bool(value)
        if parsed is None:
            self._fail(key, f"is not a boolean: {value!r:.40}")
        return parsed

    def child(self, key: str, *, required: bool = True) -> _Reader:
        value = self._data.get(key)
        if value is None and not required:
            return _Reader(f"{self._where}.{key}", None)
        if not isinstance(value, Mapping):
            self._fail(key, "is missing or not an object")
        return _Reader(f"{self._where}.{key}", value)

    def items(self, key: str) -> list[Any]:
        value = self._data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self._fail(key, "is not a list")
        return value

    def options(self) -> ReceiptOptions:
        return ReceiptOptions(
            customer_receipt_header=self.text("customer_receipt_header", ""),
            customer_receipt_footer=self.text("customer_receipt_footer", ""),
            merchant_receipt_header=self.text("merchant_receipt_header", ""),
            merchant_receipt_footer=self.text("merchant_receipt_footer", ""),
        )

    def config(self) -> PrintingConfig:
        return PrintingConfig(
            print_merchant_copy=self.flag(_PRINT_MERCHANT_COPY),
            prompt_for_customer_copy=self.flag(_PROMPT_FOR_CUSTOMER_COPY),
            print_for_signature_required_transactions=self.flag(_PRINT_FOR_SIGNATURE),
        )


_R = TypeVar("_R", bound="Request")


def _build(cls: type[_R], **values: Any) -> _R:
    """Construct a request read from the wire: a value the POS should not have sent is its fault."""
    try:
        return cls(**values)
    except InvalidRequest as exc:
        raise RemoteProtocolError(f"{cls.event}: {exc}") from exc


# ---------------------------------------------------------------------------
# POS -> terminal: requests and replies
# ---------------------------------------------------------------------------


class Request(ABC):
    """Base of every message body the POS sends.

    ``event`` names the message; ``id_prefix`` is its id prefix (§2.5), empty
    for replies that always reuse the id of the message they answer.
    """

    __slots__ = ()

    event: ClassVar[Event]
    id_prefix: ClassVar[str]

    @abstractmethod
    def to_data(self) -> JsonObject | None:
        """The ``data`` of the message, keys in wire order; ``None`` sends ``null``."""

    @classmethod
    @abstractmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        """Read the request from received ``data`` (terminal side); RemoteProtocolError if bad."""


class TransactionRequest(Request):
    """A request that starts (or looks up) a transaction; answered by ``response_event``."""

    __slots__ = ()

    tx_type: ClassVar[TxType]
    response_event: ClassVar[Event]
    pos_ref_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PurchaseRequest(TransactionRequest):
    """``purchase`` (§7.2): a card payment, optionally with tip, cashout and surcharge."""

    event: ClassVar[Event] = Event.PURCHASE
    id_prefix: ClassVar[str] = "prchs"
    tx_type: ClassVar[TxType] = TxType.PURCHASE
    response_event: ClassVar[Event] = Event.PURCHASE_RESPONSE

    pos_ref_id: str
    purchase_amount: int
    tip_amount: int = 0
    cash_amount: int = 0
    prompt_for_cashout: bool = False
    surcharge_amount: int = 0
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        for name in ("purchase_amount", "tip_amount", "cash_amount", "surcharge_amount"):
            _check_amount(name, getattr(self, name))
        _check_flag("prompt_for_cashout", self.prompt_for_cashout)
        if self.tip_amount > 0 and (self.cash_amount > 0 or self.prompt_for_cashout):
            raise InvalidRequest("Cannot Accept Tips and Cashout at the same time.")

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "purchase_amount": self.purchase_amount,
            "tip_amount": self.tip_amount,
            "cash_amount": self.cash_amount,
            "prompt_for_cashout": self.prompt_for_cashout,
            "surcharge_amount": self.surcharge_amount,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            purchase_amount=r.amount("purchase_amount"),
            tip_amount=r.amount("tip_amount", 0),
            cash_amount=r.amount("cash_amount", 0),
            prompt_for_cashout=r.flag("prompt_for_cashout"),
            surcharge_amount=r.amount("surcharge_amount", 0),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRequest(TransactionRequest):
    """``refund`` (§7.3). The amount comes first in the data, as JS sends it."""

    event: ClassVar[Event] = Event.REFUND
    id_prefix: ClassVar[str] = "refund"
    tx_type: ClassVar[TxType] = TxType.REFUND
    response_event: ClassVar[Event] = Event.REFUND_RESPONSE

    pos_ref_id: str
    refund_amount: int
    suppress_merchant_password: bool = False
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_amount("refund_amount", self.refund_amount)
        _check_flag("suppress_merchant_password", self.suppress_merchant_password)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "refund_amount": self.refund_amount,
            "pos_ref_id": self.pos_ref_id,
            "suppress_merchant_password": self.suppress_merchant_password,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            refund_amount=r.amount("refund_amount"),
            suppress_merchant_password=r.flag("suppress_merchant_password"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CashoutRequest(TransactionRequest):
    """``cash`` (§7.4): cash out only. ``surcharge_amount=None`` is sent as ``null``, as JS does."""

    event: ClassVar[Event] = Event.CASH
    id_prefix: ClassVar[str] = "cshout"
    tx_type: ClassVar[TxType] = TxType.CASHOUT
    response_event: ClassVar[Event] = Event.CASH_RESPONSE

    pos_ref_id: str
    cash_amount: int
    surcharge_amount: int | None = 0
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_amount("cash_amount", self.cash_amount)
        _check_amount("surcharge_amount", self.surcharge_amount, nullable=True)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "cash_amount": self.cash_amount,
            "surcharge_amount": self.surcharge_amount,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        # An explicit null means "never set" (JS, §7.4); a missing key takes the default.
        null_surcharge = r.is_null("surcharge_amount")
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            cash_amount=r.amount("cash_amount"),
            surcharge_amount=None if null_surcharge else r.amount("surcharge_amount", 0),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MotoPurchaseRequest(TransactionRequest):
    """``moto_purchase`` (§7.5): mail or telephone order, card keyed on the terminal."""

    event: ClassVar[Event] = Event.MOTO_PURCHASE
    id_prefix: ClassVar[str] = "moto"
    tx_type: ClassVar[TxType] = TxType.MOTO
    response_event: ClassVar[Event] = Event.MOTO_PURCHASE_RESPONSE

    pos_ref_id: str
    purchase_amount: int
    surcharge_amount: int = 0
    suppress_merchant_password: bool = False
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_amount("purchase_amount", self.purchase_amount)
        _check_amount("surcharge_amount", self.surcharge_amount)
        _check_flag("suppress_merchant_password", self.suppress_merchant_password)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "purchase_amount": self.purchase_amount,
            "surcharge_amount": self.surcharge_amount,
            "suppress_merchant_password": self.suppress_merchant_password,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            purchase_amount=r.amount("purchase_amount"),
            surcharge_amount=r.amount("surcharge_amount", 0),
            suppress_merchant_password=r.flag("suppress_merchant_password"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleRequest(TransactionRequest):
    """``settle`` (§7.14). ``pos_ref_id`` is the POS's own bookkeeping and is not sent."""

    event: ClassVar[Event] = Event.SETTLE
    id_prefix: ClassVar[str] = "settle"
    tx_type: ClassVar[TxType] = TxType.SETTLE
    response_event: ClassVar[Event] = Event.SETTLE_RESPONSE

    pos_ref_id: str = ""
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return _with_receipt({}, self.options, self.config, _SETTLE_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(cls, options=r.options(), config=r.config())


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementEnquiryRequest(TransactionRequest):
    """``settlement_enquiry`` (§7.14): totals without closing the day; ``pos_ref_id`` not sent."""

    event: ClassVar[Event] = Event.SETTLEMENT_ENQUIRY
    id_prefix: ClassVar[str] = "stlenq"
    tx_type: ClassVar[TxType] = TxType.SETTLEMENT_ENQUIRY
    response_event: ClassVar[Event] = Event.SETTLEMENT_ENQUIRY_RESPONSE

    pos_ref_id: str = ""
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return _with_receipt({}, self.options, self.config, _SETTLE_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(cls, options=r.options(), config=r.config())


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTransactionRequest(TransactionRequest):
    """``get_transaction`` (§7.10): the outcome of a recent transaction, by ``pos_ref_id``."""

    event: ClassVar[Event] = Event.GET_TRANSACTION
    id_prefix: ClassVar[str] = "gt"
    tx_type: ClassVar[TxType] = TxType.GET_TRANSACTION
    response_event: ClassVar[Event] = Event.GET_TRANSACTION_RESPONSE

    pos_ref_id: str

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return {"pos_ref_id": self.pos_ref_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return _build(cls, pos_ref_id=_Reader(cls.event, data).text("pos_ref_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class GetLastTransactionRequest(TransactionRequest):
    """``get_last_transaction`` (§7.11): data ``null``; ``pos_ref_id`` is local bookkeeping."""

    event: ClassVar[Event] = Event.GET_LAST_TRANSACTION
    id_prefix: ClassVar[str] = "glt"
    tx_type: ClassVar[TxType] = TxType.GET_LAST_TRANSACTION
    response_event: ClassVar[Event] = Event.LAST_TRANSACTION

    pos_ref_id: str = ""

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> None:
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReversalRequest(TransactionRequest):
    """``reverse_transaction`` (§7.15): reverse the transaction with this ``pos_ref_id``."""

    event: ClassVar[Event] = Event.REVERSE_TRANSACTION
    id_prefix: ClassVar[str] = "rev"
    tx_type: ClassVar[TxType] = TxType.REVERSAL
    response_event: ClassVar[Event] = Event.REVERSE_TRANSACTION_RESPONSE

    pos_ref_id: str

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return {"pos_ref_id": self.pos_ref_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return _build(cls, pos_ref_id=_Reader(cls.event, data).text("pos_ref_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountVerifyRequest(TransactionRequest):
    """``account_verify`` (§7.16): check a card; no options or printing config."""

    event: ClassVar[Event] = Event.ACCOUNT_VERIFY
    id_prefix: ClassVar[str] = "prav"
    tx_type: ClassVar[TxType] = TxType.ACCOUNT_VERIFY
    response_event: ClassVar[Event] = Event.ACCOUNT_VERIFY_RESPONSE

    pos_ref_id: str

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return {"pos_ref_id": self.pos_ref_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return _build(cls, pos_ref_id=_Reader(cls.event, data).text("pos_ref_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthOpenRequest(TransactionRequest):
    """``preauth`` (§7.16): open a preauthorisation for ``preauth_amount``."""

    event: ClassVar[Event] = Event.PREAUTH
    id_prefix: ClassVar[str] = "prac"
    tx_type: ClassVar[TxType] = TxType.PREAUTH
    response_event: ClassVar[Event] = Event.PREAUTH_RESPONSE

    pos_ref_id: str
    preauth_amount: int
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_amount("preauth_amount", self.preauth_amount)

    def to_data(self) -> JsonObject:
        data: JsonObject = {"pos_ref_id": self.pos_ref_id, "preauth_amount": self.preauth_amount}
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            preauth_amount=r.amount("preauth_amount"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthTopupRequest(TransactionRequest):
    """``preauth_topup`` (§7.16): raise an open preauthorisation by ``topup_amount``."""

    event: ClassVar[Event] = Event.PREAUTH_TOPUP
    id_prefix: ClassVar[str] = "prtu"
    tx_type: ClassVar[TxType] = TxType.PREAUTH_TOPUP
    response_event: ClassVar[Event] = Event.PREAUTH_TOPUP_RESPONSE

    pos_ref_id: str
    preauth_id: str
    topup_amount: int
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_text("preauth_id", self.preauth_id)
        _check_amount("topup_amount", self.topup_amount)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "preauth_id": self.preauth_id,
            "topup_amount": self.topup_amount,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            preauth_id=r.text("preauth_id"),
            topup_amount=r.amount("topup_amount"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthPartialCancellationRequest(TransactionRequest):
    """``preauth_partial_cancellation`` (§7.16): lower an open preauthorisation."""

    event: ClassVar[Event] = Event.PREAUTH_PARTIAL_CANCELLATION
    id_prefix: ClassVar[str] = "prpc"
    tx_type: ClassVar[TxType] = TxType.PREAUTH_PARTIAL_CANCELLATION
    response_event: ClassVar[Event] = Event.PREAUTH_PARTIAL_CANCELLATION_RESPONSE

    pos_ref_id: str
    preauth_id: str
    preauth_cancel_amount: int
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_text("preauth_id", self.preauth_id)
        _check_amount("preauth_cancel_amount", self.preauth_cancel_amount)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "preauth_id": self.preauth_id,
            "preauth_cancel_amount": self.preauth_cancel_amount,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            preauth_id=r.text("preauth_id"),
            preauth_cancel_amount=r.amount("preauth_cancel_amount"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthExtendRequest(TransactionRequest):
    """``preauth_extend`` (§7.16): extend the life of an open preauthorisation."""

    event: ClassVar[Event] = Event.PREAUTH_EXTEND
    id_prefix: ClassVar[str] = "prext"
    tx_type: ClassVar[TxType] = TxType.PREAUTH_EXTEND
    response_event: ClassVar[Event] = Event.PREAUTH_EXTEND_RESPONSE

    pos_ref_id: str
    preauth_id: str
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_text("preauth_id", self.preauth_id)

    def to_data(self) -> JsonObject:
        data: JsonObject = {"pos_ref_id": self.pos_ref_id, "preauth_id": self.preauth_id}
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            preauth_id=r.text("preauth_id"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthCancellationRequest(TransactionRequest):
    """``preauth_cancellation`` (§7.16): release an open preauthorisation entirely."""

    event: ClassVar[Event] = Event.PREAUTH_CANCELLATION
    id_prefix: ClassVar[str] = "prac"
    tx_type: ClassVar[TxType] = TxType.PREAUTH_CANCELLATION
    response_event: ClassVar[Event] = Event.PREAUTH_CANCELLATION_RESPONSE

    pos_ref_id: str
    preauth_id: str
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_text("preauth_id", self.preauth_id)

    def to_data(self) -> JsonObject:
        data: JsonObject = {"pos_ref_id": self.pos_ref_id, "preauth_id": self.preauth_id}
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            preauth_id=r.text("preauth_id"),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthCompletionRequest(TransactionRequest):
    """``completion`` (§7.16): capture ``completion_amount`` of an open preauthorisation."""

    event: ClassVar[Event] = Event.COMPLETION
    id_prefix: ClassVar[str] = "prac"
    tx_type: ClassVar[TxType] = TxType.COMPLETION
    response_event: ClassVar[Event] = Event.COMPLETION_RESPONSE

    pos_ref_id: str
    preauth_id: str
    completion_amount: int
    surcharge_amount: int = 0
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_text("preauth_id", self.preauth_id)
        _check_amount("completion_amount", self.completion_amount)
        _check_amount("surcharge_amount", self.surcharge_amount)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "preauth_id": self.preauth_id,
            "completion_amount": self.completion_amount,
            "surcharge_amount": self.surcharge_amount,
        }
        return _with_receipt(data, self.options, self.config, _ALL_FLAGS)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            preauth_id=r.text("preauth_id"),
            completion_amount=r.amount("completion_amount"),
            surcharge_amount=r.amount("surcharge_amount", 0),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipPurchaseRequest(TransactionRequest):
    """``purchase_zip`` (§7.17): a buy-now-pay-later purchase.

    Keys follow 2.9 (§13.13): options right after ``basket``, merchant ones
    first, then the flags. vectors/request_messages.json holds the 2.8.3
    order (flags, then customer, then merchant options); same keys and values.
    """

    event: ClassVar[Event] = Event.PURCHASE_ZIP
    id_prefix: ClassVar[str] = "zprchs"
    tx_type: ClassVar[TxType] = TxType.ZIP_PURCHASE
    response_event: ClassVar[Event] = Event.PURCHASE_ZIP_RESPONSE

    pos_ref_id: str
    purchase_amount: int
    store_code: str
    description: str = ""
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_amount("purchase_amount", self.purchase_amount)
        _check_text("store_code", self.store_code)
        _check_text("description", self.description)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "purchase_amount": self.purchase_amount,
            "zip_data": {"store_code": self.store_code},
            "basket": {"description": self.description},
        }
        data.update(self.options.items_v29())
        data.update(self.config.flags(_ZIP_FLAGS))
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            purchase_amount=r.amount("purchase_amount"),
            store_code=r.child("zip_data").text("store_code"),
            description=r.child("basket", required=False).text("description", ""),
            options=r.options(),
            config=r.config(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipRefundRequest(TransactionRequest):
    """``refund_zip`` (§7.17): refund a zip purchase; keys in the 2.9 order (§13.13)."""

    event: ClassVar[Event] = Event.REFUND_ZIP
    id_prefix: ClassVar[str] = "zrefund"
    tx_type: ClassVar[TxType] = TxType.ZIP_REFUND
    response_event: ClassVar[Event] = Event.REFUND_ZIP_RESPONSE

    pos_ref_id: str
    refund_amount: int
    original_receipt_number: str
    options: ReceiptOptions = field(default_factory=ReceiptOptions)
    config: PrintingConfig = field(default_factory=PrintingConfig)

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_amount("refund_amount", self.refund_amount)
        _check_text("original_receipt_number", self.original_receipt_number)

    def to_data(self) -> JsonObject:
        data: JsonObject = {
            "pos_ref_id": self.pos_ref_id,
            "refund_amount": self.refund_amount,
            "zip_data": {"original_receipt_number": self.original_receipt_number},
        }
        data.update(self.options.items_v29())
        data.update(self.config.flags(_ZIP_FLAGS))
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(
            cls,
            pos_ref_id=r.text("pos_ref_id"),
            refund_amount=r.amount("refund_amount"),
            original_receipt_number=r.child("zip_data").text("original_receipt_number"),
            options=r.options(),
            config=r.config(),
        )


# -- requests that are not transactions --------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PairRequest(Request):
    """``pair_request`` (§4.3), always sent in clear with data ``{"padding": true}``."""

    event: ClassVar[Event] = Event.PAIR_REQUEST
    id_prefix: ClassVar[str] = "pr"

    def to_data(self) -> JsonObject:
        return {"padding": True}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class DropKeysRequest(Request):
    """``drop_keys`` (§4.6): the POS unpairs; data ``null``."""

    event: ClassVar[Event] = Event.DROP_KEYS
    id_prefix: ClassVar[str] = "drpkys"

    def to_data(self) -> None:
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class PingRequest(Request):
    """``ping`` (§5.4); data ``null``."""

    event: ClassVar[Event] = Event.PING
    id_prefix: ClassVar[str] = "ping"

    def to_data(self) -> None:
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReply(Request):
    """``pong`` answering a terminal ``ping`` (§5.4): always sent with the ping's id."""

    event: ClassVar[Event] = Event.PONG
    id_prefix: ClassVar[str] = ""

    def to_data(self) -> None:
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTransactionRequest(Request):
    """``cancel_transaction`` (§7.6); data ``null``."""

    event: ClassVar[Event] = Event.CANCEL_TRANSACTION
    id_prefix: ClassVar[str] = "ctx"

    def to_data(self) -> None:
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureAcceptRequest(Request):
    """``signature_accept`` (§7.7).

    Java sends no data (and the signature_required id); the terminal side
    reads that as ``pos_ref_id=""`` rather than refusing it.
    """

    event: ClassVar[Event] = Event.SIGNATURE_ACCEPT
    id_prefix: ClassVar[str] = "sigacc"

    pos_ref_id: str

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return {"pos_ref_id": self.pos_ref_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return _build(cls, pos_ref_id=_Reader(cls.event, data).text("pos_ref_id", ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureDeclineRequest(Request):
    """``signature_decline`` (§7.7); like :class:`SignatureAcceptRequest`."""

    event: ClassVar[Event] = Event.SIGNATURE_DECLINE
    id_prefix: ClassVar[str] = "sigdec"

    pos_ref_id: str

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)

    def to_data(self) -> JsonObject:
        return {"pos_ref_id": self.pos_ref_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return _build(cls, pos_ref_id=_Reader(cls.event, data).text("pos_ref_id", ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeAdviceRequest(Request):
    """``authorisation_code_advice`` (§7.8): the code has exactly 6 characters, digits or not."""

    event: ClassVar[Event] = Event.AUTHORISATION_CODE_ADVICE
    id_prefix: ClassVar[str] = "authad"

    pos_ref_id: str
    auth_code: str

    def __post_init__(self) -> None:
        _check_text("pos_ref_id", self.pos_ref_id)
        _check_text("auth_code", self.auth_code)
        # The client checks length only; the vector's code is "AB1234" (§7.8).
        if len(self.auth_code) != 6:
            raise InvalidRequest("Not a 6-digit code.")

    def to_data(self) -> JsonObject:
        return {"pos_ref_id": self.pos_ref_id, "auth_code": self.auth_code}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(cls, pos_ref_id=r.text("pos_ref_id"), auth_code=r.text("auth_code"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintRequest(Request):
    """``print`` (§7.20): ``payload`` is printed; ``key`` is the integrator's, passed through."""

    event: ClassVar[Event] = Event.PRINT
    id_prefix: ClassVar[str] = "print"

    key: str
    payload: str

    def __post_init__(self) -> None:
        _check_text("key", self.key)
        _check_text("payload", self.payload)

    def to_data(self) -> JsonObject:
        return {"key": self.key, "payload": self.payload}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        return _build(cls, key=r.text("key"), payload=r.text("payload"))


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTerminalStatusRequest(Request):
    """``get_terminal_status`` (§7.18); data ``{}``."""

    event: ClassVar[Event] = Event.GET_TERMINAL_STATUS
    id_prefix: ClassVar[str] = "trmnl"

    def to_data(self) -> JsonObject:
        return {}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTerminalConfigurationRequest(Request):
    """``get_terminal_configuration`` (§7.19); data ``{}``. Java uses prefix ``trmnlcnfg``."""

    event: ClassVar[Event] = Event.GET_TERMINAL_CONFIGURATION
    id_prefix: ClassVar[str] = "trmnl"

    def to_data(self) -> JsonObject:
        return {}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPosInfoRequest(Request):
    """``set_pos_info`` (§7.21, §13.12): who the POS is.

    ``spice_version`` (adaptor version) goes out at top level and inside
    ``other_info``; ``None`` is sent as ``null``.
    """

    event: ClassVar[Event] = Event.SET_POS_INFO
    id_prefix: ClassVar[str] = "prav"

    pos_version: str
    pos_vendor_id: str
    library_language: str = "python"
    library_version: str
    spice_version: str | None = None
    device_system: str = ""

    def __post_init__(self) -> None:
        for name in ("pos_version", "pos_vendor_id", "library_language", "library_version"):
            _check_text(name, getattr(self, name))
        _check_text("spice_version", self.spice_version, nullable=True)
        _check_text("device_system", self.device_system)

    def to_data(self) -> JsonObject:
        return {
            "pos_version": self.pos_version,
            "pos_vendor_id": self.pos_vendor_id,
            "library_language": self.library_language,
            "library_version": self.library_version,
            "spice_version": self.spice_version,
            "other_info": {
                "device_system": self.device_system,
                "spice_version": self.spice_version,
            },
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        other = r.child("other_info", required=False)
        return _build(
            cls,
            pos_version=r.text("pos_version"),
            pos_vendor_id=r.text("pos_vendor_id"),
            library_language=r.text("library_language", ""),
            library_version=r.text("library_version"),
            spice_version=r.nullable_text("spice_version"),
            device_system=other.text("device_system", ""),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTableConfigRequest(Request):
    """``set_table_config`` (§7.23): pushed (``patconf`` id) or the reply to ``get_table_config``.

    With pay at table off the data is only ``{"pay_at_table_enabled": false}``.
    """

    event: ClassVar[Event] = Event.SET_TABLE_CONFIG
    id_prefix: ClassVar[str] = "patconf"

    pay_at_table_enabled: bool = False
    operator_id_enabled: bool = False
    split_by_amount_enabled: bool = False
    equal_split_enabled: bool = False
    tipping_enabled: bool = False
    summary_report_enabled: bool = False
    pay_button_label: str = ""
    operator_id_label: str = ""
    table_id_label: str = ""
    operator_id_list: tuple[str, ...] = ()
    table_retrieval_enabled: bool = False

    _FLAGS: ClassVar[tuple[str, ...]] = (
        "pay_at_table_enabled",
        "operator_id_enabled",
        "split_by_amount_enabled",
        "equal_split_enabled",
        "tipping_enabled",
        "summary_report_enabled",
        "table_retrieval_enabled",
    )
    _LABELS: ClassVar[tuple[str, ...]] = ("pay_button_label", "operator_id_label", "table_id_label")

    def __post_init__(self) -> None:
        for name in self._FLAGS:
            _check_flag(name, getattr(self, name))
        for name in self._LABELS:
            _check_text(name, getattr(self, name))
        if not isinstance(self.operator_id_list, tuple):
            raise InvalidRequest("operator_id_list must be a tuple of str")
        for operator_id in self.operator_id_list:
            _check_text("operator_id_list item", operator_id)

    def to_data(self) -> JsonObject:
        if not self.pay_at_table_enabled:
            return {"pay_at_table_enabled": False}
        return {
            "pay_at_table_enabled": True,
            "operator_id_enabled": self.operator_id_enabled,
            "split_by_amount_enabled": self.split_by_amount_enabled,
            "equal_split_enabled": self.equal_split_enabled,
            "tipping_enabled": self.tipping_enabled,
            "summary_report_enabled": self.summary_report_enabled,
            "pay_button_label": self.pay_button_label,
            "operator_id_label": self.operator_id_label,
            "table_id_label": self.table_id_label,
            "operator_id_list": list(self.operator_id_list),
            "table_retrieval_enabled": self.table_retrieval_enabled,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        if not r.flag("pay_at_table_enabled", None):
            return cls()
        operator_ids = []
        for item in r.items("operator_id_list"):
            text = as_str(item)
            if text is None:
                raise RemoteProtocolError(f"{cls.event}: operator_id_list holds a non-string")
            operator_ids.append(text)
        return _build(
            cls,
            pay_at_table_enabled=True,
            **{name: r.flag(name) for name in cls._FLAGS[1:]},
            **{name: r.text(name, "") for name in cls._LABELS},
            operator_id_list=tuple(operator_ids),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentHistoryEntry:
    """One payment of a bill (§7.23): ``card`` or ``cash`` and its payment summary (§7.1)."""

    payment_type: str
    payment_summary: JsonObject

    def to_data(self) -> JsonObject:
        """The entry as it appears in ``bill_payment_history``."""
        return {"payment_type": self.payment_type, "payment_summary": self.payment_summary}


@dataclass(frozen=True, slots=True, kw_only=True)
class BillDetailsReply(Request):
    """``bill_details`` (§7.23), always the reply to ``get_bill_details`` or ``bill_payment``.

    On failure ``error_reason`` (``INVALID_TABLE_ID``, ...) is sent as both
    reason and detail, as the clients do, and no totals go out.
    """

    event: ClassVar[Event] = Event.BILL_DETAILS
    id_prefix: ClassVar[str] = ""

    success: bool
    bill_id: str = ""
    table_id: str = ""
    bill_total_amount: int = 0
    bill_outstanding_amount: int = 0
    bill_payment_history: tuple[PaymentHistoryEntry, ...] = ()
    error_reason: str = ""

    def __post_init__(self) -> None:
        _check_flag("success", self.success)
        _check_text("bill_id", self.bill_id)
        _check_text("table_id", self.table_id)
        _check_amount("bill_total_amount", self.bill_total_amount)
        _check_amount("bill_outstanding_amount", self.bill_outstanding_amount)
        _check_text("error_reason", self.error_reason)

    def to_data(self) -> JsonObject:
        data: JsonObject = {"success": self.success}
        if self.bill_id:
            data["bill_id"] = self.bill_id
        if self.table_id:
            data["table_id"] = self.table_id
        if self.success:
            data["bill_total_amount"] = self.bill_total_amount
            data["bill_outstanding_amount"] = self.bill_outstanding_amount
            data["bill_payment_history"] = [e.to_data() for e in self.bill_payment_history]
        else:
            data["error_reason"] = self.error_reason
            data["error_detail"] = self.error_reason
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        success = r.flag("success", None)
        history = []
        for item in r.items("bill_payment_history"):
            summary = item.get("payment_summary") if isinstance(item, dict) else None
            if not isinstance(summary, dict):
                raise RemoteProtocolError(f"{cls.event}: a payment has no payment_summary object")
            entry = _Reader(f"{cls.event}.bill_payment_history", item)
            history.append(
                PaymentHistoryEntry(
                    payment_type=entry.text("payment_type"), payment_summary=summary
                )
            )
        return _build(
            cls,
            success=success,
            bill_id=r.text("bill_id", ""),
            table_id=r.text("table_id", ""),
            bill_total_amount=r.amount("bill_total_amount", 0),
            bill_outstanding_amount=r.amount("bill_outstanding_amount", 0),
            bill_payment_history=tuple(history),
            error_reason="" if success else r.text("error_reason", ""),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTable:
    """One entry of ``open_tables`` (§7.23, §13.13)."""

    table_id: str
    label: str
    bill_outstanding_amount: int

    def __post_init__(self) -> None:
        _check_text("table_id", self.table_id)
        _check_text("label", self.label)
        _check_amount("bill_outstanding_amount", self.bill_outstanding_amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTablesReply(Request):
    """``open_tables`` (§7.23), always the reply to ``get_open_tables``."""

    event: ClassVar[Event] = Event.OPEN_TABLES
    id_prefix: ClassVar[str] = ""

    tables: tuple[OpenTable, ...] = ()

    def to_data(self) -> JsonObject:
        return {
            "tables": [
                {
                    "table_id": t.table_id,
                    "label": t.label,
                    "bill_outstanding_amount": t.bill_outstanding_amount,
                }
                for t in self.tables
            ]
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        r = _Reader(cls.event, data)
        tables = []
        for item in r.items("tables"):
            t = _Reader(f"{cls.event}.tables", item if isinstance(item, dict) else None)
            try:
                table = OpenTable(
                    table_id=t.text("table_id"),
                    label=t.text("label", ""),
                    bill_outstanding_amount=t.amount("bill_outstanding_amount", 0),
                )
            except InvalidRequest as exc:
                raise RemoteProtocolError(f"{cls.event}: {exc}") from exc
            tables.append(table)
        return cls(tables=tuple(tables))


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentFlowEndedAck(Request):
    """``bill_payment_flow_ended_ack`` (§7.23): a new id with the ``authad`` prefix, as JS does."""

    event: ClassVar[Event] = Event.BILL_PAYMENT_FLOW_ENDED_ACK
    id_prefix: ClassVar[str] = "authad"

    bill_id: str

    def __post_init__(self) -> None:
        _check_text("bill_id", self.bill_id)

    def to_data(self) -> JsonObject:
        return {"bill_id": self.bill_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        return _build(cls, bill_id=_Reader(cls.event, data).text("bill_id"))


TRANSACTION_REQUESTS: Final[Mapping[TxType, type[TransactionRequest]]] = {
    TxType.PURCHASE: PurchaseRequest,
    TxType.REFUND: RefundRequest,
    TxType.CASHOUT: CashoutRequest,
    TxType.MOTO: MotoPurchaseRequest,
    TxType.SETTLE: SettleRequest,
    TxType.SETTLEMENT_ENQUIRY: SettlementEnquiryRequest,
    TxType.GET_TRANSACTION: GetTransactionRequest,
    TxType.GET_LAST_TRANSACTION: GetLastTransactionRequest,
    TxType.REVERSAL: ReversalRequest,
    TxType.ACCOUNT_VERIFY: AccountVerifyRequest,
    TxType.PREAUTH: PreauthOpenRequest,
    TxType.PREAUTH_TOPUP: PreauthTopupRequest,
    TxType.PREAUTH_PARTIAL_CANCELLATION: PreauthPartialCancellationRequest,
    TxType.PREAUTH_EXTEND: PreauthExtendRequest,
    TxType.PREAUTH_CANCELLATION: PreauthCancellationRequest,
    TxType.COMPLETION: PreauthCompletionRequest,
    TxType.ZIP_PURCHASE: ZipPurchaseRequest,
    TxType.ZIP_REFUND: ZipRefundRequest,
}
"""The request class of each transaction type."""

_OTHER_REQUESTS: Final[tuple[type[Request], ...]] = (
    PairRequest,
    DropKeysRequest,
    PingRequest,
    PongReply,
    CancelTransactionRequest,
    SignatureAcceptRequest,
    SignatureDeclineRequest,
    AuthCodeAdviceRequest,
    PrintRequest,
    GetTerminalStatusRequest,
    GetTerminalConfigurationRequest,
    SetPosInfoRequest,
    SetTableConfigRequest,
    BillDetailsReply,
    OpenTablesReply,
    BillPaymentFlowEndedAck,
)

REQUEST_CLASSES_BY_EVENT: Final[Mapping[str, type[Request]]] = {
    cls.event: cls for cls in (*TRANSACTION_REQUESTS.values(), *_OTHER_REQUESTS)
}
"""The class that reads each POS event's data (terminal side); ``key_response`` is pairing's."""


def build_message(
    request: Request, ids: RequestIds, *, reply_to: str | None = None
) -> tuple[str, str, JsonObject | None]:
    """The ``(id, event, data)`` of a request; the envelope stamps and sends it.

    ``reply_to`` is the id of the terminal message being answered (a pong, a
    pay-at-table reply); it is used as is and no counter value is spent.
    Replies that always answer something (``id_prefix == ""``) require it.
    """
    if reply_to is not None:
        message_id = reply_to
    elif request.id_prefix:
        message_id = ids.next(request.id_prefix)
    else:
        raise LocalProtocolError(f"{request.event} only answers a terminal message: give reply_to")
    return message_id, str(request.event), request.to_data()


def parse_request(event: str, data: Mapping[str, Any] | None) -> Request:
    """Read a POS message (terminal side); RemoteProtocolError for an unknown event or bad data."""
    cls = REQUEST_CLASSES_BY_EVENT.get(event)
    if cls is None:
        raise RemoteProtocolError(f"{event!r} is not a POS request this terminal understands")
    return cls.from_data(data)


# ---------------------------------------------------------------------------
# Terminal -> POS: parsed messages
# ---------------------------------------------------------------------------


def _text(data: JsonObject, key: str) -> str | None:
    return as_str(data.get(key))


def _int(data: JsonObject, key: str) -> int | None:
    return as_int(data.get(key))


def _bool(data: JsonObject, key: str) -> bool | None:
    return as_bool(data.get(key))


@dataclass(frozen=True, slots=True, kw_only=True)
class _FromTerminal:
    """What every parsed terminal message has: its id and its raw ``data`` (``{}`` when absent).

    ``data`` stays out of ``repr``: it may hold receipts, tokens or key values.
    """

    id: str
    data: JsonObject = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        """Read a message of this type; fields of the wrong type read as ``None``."""
        return cls(id=message_id, data=data)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionResponse(_FromTerminal):
    """A purchase-like transaction response (§7.1 "Response fields").

    Used for every transaction ``*_response``, for ``last_transaction`` (flat
    fields) and for the ``tx`` nested in a ``get_transaction_response``
    (whose ``event`` it then carries). ``success`` is ``None`` when missing:
    the outcome is Unknown (§7.1).
    """

    event: str
    success: bool | None = None
    pos_ref_id: str | None = None
    transaction_type: str | None = None
    host_response_code: str | None = None
    host_response_text: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None
    rrn: str | None = None
    stan: str | None = None
    auth_code: str | None = None
    scheme_name: str | None = None
    masked_pan: str | None = None
    card_entry: str | None = None
    account_type: str | None = None
    terminal_id: str | None = None
    terminal_ref_id: str | None = None
    merchant_id: str | None = None
    bank_date: str | None = None
    bank_time: str | None = None
    preauth_id: str | None = None
    purchase_amount: int | None = None
    tip_amount: int | None = None
    surcharge_amount: int | None = None
    cash_amount: int | None = None
    refund_amount: int | None = None
    bank_noncash_amount: int | None = None
    bank_cash_amount: int | None = None
    preauth_amount: int | None = None
    topup_amount: int | None = None
    preauth_cancel_amount: int | None = None
    completion_amount: int | None = None
    balance_amount: int | None = None
    existing_preauth_amount: int | None = None
    customer_receipt: str | None = field(default=None, repr=False)
    merchant_receipt: str | None = field(default=None, repr=False)
    customer_receipt_printed: bool | None = None
    merchant_receipt_printed: bool | None = None

    @property
    def retrieved(self) -> bool:
        """Whether the terminal found a transaction: ``host_response_code`` is non-empty (§7.11)."""
        return bool(self.host_response_code)

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            event=event,
            success=_bool(data, "success"),
            pos_ref_id=_text(data, "pos_ref_id"),
            transaction_type=_text(data, "transaction_type"),
            host_response_code=_text(data, "host_response_code"),
            host_response_text=_text(data, "host_response_text"),
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
            rrn=_text(data, "rrn"),
            stan=_text(data, "stan"),
            auth_code=_text(data, "auth_code"),
            scheme_name=_text(data, "scheme_name"),
            masked_pan=_text(data, "masked_pan"),
            card_entry=_text(data, "card_entry"),
            account_type=_text(data, "account_type"),
            terminal_id=_text(data, "terminal_id"),
            terminal_ref_id=_text(data, "terminal_ref_id"),
            merchant_id=_text(data, "merchant_id"),
            bank_date=_text(data, "bank_date"),
            bank_time=_text(data, "bank_time"),
            preauth_id=_text(data, "preauth_id"),
            purchase_amount=_int(data, "purchase_amount"),
            tip_amount=_int(data, "tip_amount"),
            surcharge_amount=_int(data, "surcharge_amount"),
            cash_amount=_int(data, "cash_amount"),
            refund_amount=_int(data, "refund_amount"),
            bank_noncash_amount=_int(data, "bank_noncash_amount"),
            bank_cash_amount=_int(data, "bank_cash_amount"),
            preauth_amount=_int(data, "preauth_amount"),
            topup_amount=_int(data, "topup_amount"),
            preauth_cancel_amount=_int(data, "preauth_cancel_amount"),
            completion_amount=_int(data, "completion_amount"),
            balance_amount=_int(data, "balance_amount"),
            existing_preauth_amount=_int(data, "existing_preauth_amount"),
            customer_receipt=_text(data, "customer_receipt"),
            merchant_receipt=_text(data, "merchant_receipt"),
            customer_receipt_printed=_bool(data, "customer_receipt_printed"),
            merchant_receipt_printed=_bool(data, "merchant_receipt_printed"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTransactionResponse(_FromTerminal):
    """``get_transaction_response`` (§7.10): ``success`` says whether the lookup worked.

    ``tx`` is the original response, nested; ``None`` when absent or not an
    object (R10: keep waiting). Apply the §7.10 table to ``error_reason``.
    """

    success: bool | None = None
    pos_ref_id: str | None = None
    tx: TransactionResponse | None = None
    error_reason: str | None = None
    error_detail: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        tx = data.get("tx")
        return cls(
            id=message_id,
            data=data,
            success=_bool(data, "success"),
            pos_ref_id=_text(data, "pos_ref_id"),
            tx=TransactionResponse.parse(message_id, event, tx) if isinstance(tx, dict) else None,
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResponse(_FromTerminal):
    """``cancel_response`` (§7.6): success only means the attempt was accepted."""

    success: bool | None = None
    pos_ref_id: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            success=_bool(data, "success"),
            pos_ref_id=_text(data, "pos_ref_id"),
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureRequired(_FromTerminal):
    """``signature_required`` (§7.7): print ``merchant_receipt``, have it signed, then answer."""

    pos_ref_id: str | None = None
    merchant_receipt: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            pos_ref_id=_text(data, "pos_ref_id"),
            merchant_receipt=_text(data, "merchant_receipt"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeRequired(_FromTerminal):
    """``authorisation_code_required`` (§7.8): call the phone number, quote the merchant id."""

    pos_ref_id: str | None = None
    auth_centre_phone_number: str | None = None
    merchant_id: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            pos_ref_id=_text(data, "pos_ref_id"),
            auth_centre_phone_number=_text(data, "auth_centre_phone_number"),
            merchant_id=_text(data, "merchant_id"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnUpdate(_FromTerminal):
    """``txn_update_message`` (§7.9): what the terminal screen says; informational."""

    display_message_code: int | None = None
    display_message_text: str = ""

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            display_message_code=_int(data, "display_message_code"),
            display_message_text=_text(data, "display_message_text") or "",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemeTotals:
    """One card scheme's line of a settlement (§7.14). Numbers arrive as strings."""

    scheme_name: str | None = None
    settle_by_acquirer: bool | None = None
    total_count: int | None = None
    total_value: int | None = None
    total_purchase_count: int | None = None
    total_purchase_value: int | None = None
    total_refund_count: int | None = None
    total_refund_value: int | None = None
    total_cash_count: int | None = None
    total_cash_value: int | None = None

    @classmethod
    def parse(cls, data: JsonObject) -> Self:
        """Read one entry of ``schemes``; ``settle_by_acquirer`` is ``"Yes"``/``"No"``."""
        flag = data.get("settle_by_acquirer")
        settle_by_acquirer = as_bool(flag)
        if isinstance(flag, str) and flag.strip().lower() in ("yes", "no"):
            settle_by_acquirer = flag.strip().lower() == "yes"
        return cls(
            scheme_name=_text(data, "scheme_name"),
            settle_by_acquirer=settle_by_acquirer,
            total_count=_int(data, "total_count"),
            total_value=_int(data, "total_value"),
            total_purchase_count=_int(data, "total_purchase_count"),
            total_purchase_value=_int(data, "total_purchase_value"),
            total_refund_count=_int(data, "total_refund_count"),
            total_refund_value=_int(data, "total_refund_value"),
            total_cash_count=_int(data, "total_cash_count"),
            total_cash_value=_int(data, "total_cash_value"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementResponse(_FromTerminal):
    """``settle_response`` or ``settlement_enquiry_response`` (§7.14); carries no ``pos_ref_id``."""

    event: str
    success: bool | None = None
    host_response_code: str | None = None
    host_response_text: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None
    bank_date: str | None = None
    bank_time: str | None = None
    terminal_id: str | None = None
    merchant_receipt: str | None = field(default=None, repr=False)
    merchant_receipt_printed: bool | None = None
    accumulated_total_count: int | None = None
    accumulated_total_value: int | None = None
    accumulated_settle_by_acquirer_count: int | None = None
    accumulated_settle_by_acquirer_value: int | None = None
    schemes: tuple[SchemeTotals, ...] = ()

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        schemes = data.get("schemes")
        return cls(
            id=message_id,
            data=data,
            event=event,
            success=_bool(data, "success"),
            host_response_code=_text(data, "host_response_code"),
            host_response_text=_text(data, "host_response_text"),
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
            bank_date=_text(data, "bank_date"),
            bank_time=_text(data, "bank_time"),
            terminal_id=_text(data, "terminal_id"),
            merchant_receipt=_text(data, "merchant_receipt"),
            merchant_receipt_printed=_bool(data, "merchant_receipt_printed"),
            accumulated_total_count=_int(data, "accumulated_total_count"),
            accumulated_total_value=_int(data, "accumulated_total_value"),
            accumulated_settle_by_acquirer_count=_int(data, "accumulated_settle_by_acquirer_count"),
            accumulated_settle_by_acquirer_value=_int(data, "accumulated_settle_by_acquirer_value"),
            schemes=tuple(
                SchemeTotals.parse(item)
                for item in (schemes if isinstance(schemes, list) else ())
                if isinstance(item, dict)
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalStatus(_FromTerminal):
    """``terminal_status`` (§7.18): ``battery_level`` is a percentage, number or numeric string."""

    status: str | None = None
    battery_level: int | None = None
    charging: bool | None = None
    success: bool | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            status=_text(data, "status"),
            battery_level=_int(data, "battery_level"),
            charging=_bool(data, "charging"),
            success=_bool(data, "success"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryLevelChanged(_FromTerminal):
    """``battery_level_changed`` (§7.18), unsolicited."""

    battery_level: int | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(id=message_id, data=data, battery_level=_int(data, "battery_level"))


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalConfiguration(_FromTerminal):
    """``terminal_configuration`` (§7.19): the serial number and model matter to the POS."""

    success: bool | None = None
    comms_selected: str | None = None
    merchant_id: str | None = None
    pa_version: str | None = None
    payment_interface_version: str | None = None
    plugin_version: str | None = None
    serial_number: str | None = None
    terminal_id: str | None = None
    terminal_model: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            success=_bool(data, "success"),
            comms_selected=_text(data, "comms_selected"),
            merchant_id=_text(data, "merchant_id"),
            pa_version=_text(data, "pa_version"),
            payment_interface_version=_text(data, "payment_interface_version"),
            plugin_version=_text(data, "plugin_version"),
            serial_number=_text(data, "serial_number"),
            terminal_id=_text(data, "terminal_id"),
            terminal_model=_text(data, "terminal_model"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintResponse(_FromTerminal):
    """``print_response`` (§7.20); its id may be the terminal's own, not the request's."""

    success: bool | None = None
    error_reason: str | None = None
    error_detail: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            success=_bool(data, "success"),
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPosInfoResponse(_FromTerminal):
    """``set_pos_info_response`` (§7.21)."""

    success: bool | None = None
    error_reason: str | None = None
    error_detail: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            success=_bool(data, "success"),
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest(_FromTerminal):
    """``key_request`` (§4.3): the terminal's DH public values ``enc.A`` and ``hmac.A`` (hex)."""

    enc_a: str
    hmac_a: str

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        enc, mac = data.get("enc"), data.get("hmac")
        enc_a = enc.get("A") if isinstance(enc, dict) else None
        hmac_a = mac.get("A") if isinstance(mac, dict) else None
        if not isinstance(enc_a, str) or not enc_a or not isinstance(hmac_a, str) or not hmac_a:
            raise RemoteProtocolError("key_request without enc.A and hmac.A strings")
        return cls(id=message_id, data=data, enc_a=enc_a, hmac_a=hmac_a)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCheck(_FromTerminal):
    """``key_check`` (§4.4): the first encrypted message; its HMAC gives the confirmation code."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PairResponse(_FromTerminal):
    """``pair_response`` (§4.4): pairing confirmed on the terminal only when ``success`` is true."""

    success: bool = False

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(id=message_id, data=data, success=_bool(data, "success") is True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(_FromTerminal):
    """``ping`` from the terminal (§5.4): answer with :class:`PongReply` and this id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(_FromTerminal):
    """``pong`` (§5.3-5.4); the first one of a connection means ready to transact."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestUseNextKeys(_FromTerminal):
    """``request_use_next_keys`` (§5.7): roll the keys, answer with the new ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DropKeys(_FromTerminal):
    """``drop_keys`` from the terminal (§4.6): it unpaired."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage(_FromTerminal):
    """``error`` (§9), e.g. ``NO_TRANSACTION`` in answer to a cancel."""

    error_reason: str | None = None
    error_detail: str | None = None

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(
            id=message_id,
            data=data,
            error_reason=_text(data, "error_reason"),
            error_detail=_text(data, "error_detail"),
        )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class PosSpiToken(_FromTerminal):
    """``provision_pos_spi_token`` (§13.10): a secret; ``repr`` shows only its last 4 characters."""

    token: str

    def __repr__(self) -> str:
        tail = self.token[-4:] if len(self.token) > 8 else ""
        return f"PosSpiToken(id={self.id!r}, token='…{tail}')"

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        token = data.get("pos_spi_auth_token")
        if not isinstance(token, str) or not token:
            raise RemoteProtocolError("provision_pos_spi_token without a pos_spi_auth_token string")
        return cls(id=message_id, data=data, token=token)


@dataclass(frozen=True, slots=True, kw_only=True)
class PayAtTableMessage(_FromTerminal):
    """A pay-at-table request from the terminal (§7.23); its ``data`` is read by that layer."""

    event: str

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(id=message_id, data=data, event=event)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownMessage(_FromTerminal):
    """An event this POS does not handle (legacy ``login_response``, a POS-only event, ...)."""

    event: str

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        return cls(id=message_id, data=data, event=event)


TerminalMessage: TypeAlias = (
    TransactionResponse
    | GetTransactionResponse
    | CancelResponse
    | SignatureRequired
    | AuthCodeRequired
    | TxnUpdate
    | SettlementResponse
    | TerminalStatus
    | BatteryLevelChanged
    | TerminalConfiguration
    | PrintResponse
    | SetPosInfoResponse
    | KeyRequest
    | KeyCheck
    | PairResponse
    | Ping
    | Pong
    | RequestUseNextKeys
    | DropKeys
    | ErrorMessage
    | PosSpiToken
    | PayAtTableMessage
    | UnknownMessage
)
"""Every typed form :func:`parse_terminal_message` returns."""

_Parser: TypeAlias = Callable[[str, str, JsonObject], TerminalMessage]

_TRANSACTION_RESPONSE_EVENTS: Final = (
    Event.PURCHASE_RESPONSE,
    Event.REFUND_RESPONSE,
    Event.CASH_RESPONSE,
    Event.MOTO_PURCHASE_RESPONSE,
    Event.LAST_TRANSACTION,
    Event.REVERSE_TRANSACTION_RESPONSE,
    Event.ACCOUNT_VERIFY_RESPONSE,
    Event.PREAUTH_RESPONSE,
    Event.PREAUTH_TOPUP_RESPONSE,
    Event.PREAUTH_PARTIAL_CANCELLATION_RESPONSE,
    Event.PREAUTH_EXTEND_RESPONSE,
    Event.PREAUTH_CANCELLATION_RESPONSE,
    Event.COMPLETION_RESPONSE,
    Event.PURCHASE_ZIP_RESPONSE,
    Event.REFUND_ZIP_RESPONSE,
)

_PAY_AT_TABLE_EVENTS: Final = (
    Event.GET_TABLE_CONFIG,
    Event.GET_BILL_DETAILS,
    Event.BILL_PAYMENT,
    Event.GET_OPEN_TABLES,
    Event.BILL_PAYMENT_FLOW_ENDED,
)

_PARSERS: Final[Mapping[str, _Parser]] = {
    **{event: TransactionResponse.parse for event in _TRANSACTION_RESPONSE_EVENTS},
    **{event: PayAtTableMessage.parse for event in _PAY_AT_TABLE_EVENTS},
    Event.GET_TRANSACTION_RESPONSE: GetTransactionResponse.parse,
    Event.CANCEL_RESPONSE: CancelResponse.parse,
    Event.SIGNATURE_REQUIRED: SignatureRequired.parse,
    Event.AUTHORISATION_CODE_REQUIRED: AuthCodeRequired.parse,
    Event.TXN_UPDATE_MESSAGE: TxnUpdate.parse,
    Event.SETTLE_RESPONSE: SettlementResponse.parse,
    Event.SETTLEMENT_ENQUIRY_RESPONSE: SettlementResponse.parse,
    Event.TERMINAL_STATUS: TerminalStatus.parse,
    Event.BATTERY_LEVEL_CHANGED: BatteryLevelChanged.parse,
    Event.TERMINAL_CONFIGURATION: TerminalConfiguration.parse,
    Event.PRINT_RESPONSE: PrintResponse.parse,
    Event.SET_POS_INFO_RESPONSE: SetPosInfoResponse.parse,
    Event.KEY_REQUEST: KeyRequest.parse,
    Event.KEY_CHECK: KeyCheck.parse,
    Event.PAIR_RESPONSE: PairResponse.parse,
    Event.PING: Ping.parse,
    Event.PONG: Pong.parse,
    Event.REQUEST_USE_NEXT_KEYS: RequestUseNextKeys.parse,
    Event.DROP_KEYS: DropKeys.parse,
    Event.ERROR: ErrorMessage.parse,
    Event.PROVISION_POS_SPI_TOKEN: PosSpiToken.parse,
}


def parse_terminal_message(message: Message) -> TerminalMessage:
    """The typed form of a message from the terminal, chosen by its event.

    Raises only ``RemoteProtocolError``, and only for messages that cannot
    mean anything (``key_request`` without ``A`` values, a token message
    without a token). Unknown events become :class:`UnknownMessage`.
    """
    data = message.data if isinstance(message.data, dict) else {}
    parse = _PARSERS.get(message.event, UnknownMessage.parse)
    return parse(message.id, message.event, data)
