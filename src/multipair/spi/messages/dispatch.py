"""Which class reads which event, both ways (PROTOCOL.md Appendix B, §9).

- :func:`parse_request` is the terminal side's reader of a POS request:
  lenient about representation (``"2500"`` is 2500), strict about
  substance: an unknown event, a missing required field or a value that
  cannot be what it should be raises ``RemoteProtocolError``.
- :func:`parse_terminal_message` never raises anything but
  ``RemoteProtocolError``, and that only when a message cannot mean anything
  (a ``key_request`` without its ``A`` values). A field of the wrong type
  reads as ``None``; the raw ``data`` is kept on every parsed message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from multipair.exceptions import RemoteProtocolError
from multipair.spi.envelope import JsonObject, Message
from multipair.spi.messages._wire import wire
from multipair.spi.messages.base import FromTerminal, Request, TransactionRequest
from multipair.spi.messages.events import Event, TxType
from multipair.spi.messages.pairing import (
    DropKeys,
    DropKeysRequest,
    KeyCheck,
    KeyRequest,
    PairRequest,
    PairResponse,
    Ping,
    PingRequest,
    Pong,
    PongReply,
    PosSpiToken,
    RequestUseNextKeys,
)
from multipair.spi.messages.pay_at_table import (
    BillDetailsReply,
    BillPaymentFlowEndedAck,
    OpenTablesReply,
    PayAtTableMessage,
    SetTableConfigRequest,
)
from multipair.spi.messages.preauth import (
    AccountVerifyRequest,
    PreauthCancellationRequest,
    PreauthCompletionRequest,
    PreauthExtendRequest,
    PreauthOpenRequest,
    PreauthPartialCancellationRequest,
    PreauthTopupRequest,
)
from multipair.spi.messages.settlement import (
    SettlementEnquiryRequest,
    SettlementResponse,
    SettleRequest,
)
from multipair.spi.messages.status import (
    BatteryLevelChanged,
    GetTerminalConfigurationRequest,
    GetTerminalStatusRequest,
    PrintRequest,
    PrintResponse,
    SetPosInfoRequest,
    SetPosInfoResponse,
    TerminalConfiguration,
    TerminalStatus,
)
from multipair.spi.messages.transactions import (
    AuthCodeAdviceRequest,
    AuthCodeRequired,
    CancelResponse,
    CancelTransactionRequest,
    CashoutRequest,
    GetLastTransactionRequest,
    GetTransactionRequest,
    GetTransactionResponse,
    MotoPurchaseRequest,
    PurchaseRequest,
    RefundRequest,
    ReversalRequest,
    SignatureAcceptRequest,
    SignatureDeclineRequest,
    SignatureRequired,
    TransactionResponse,
    TxnUpdate,
    ZipPurchaseRequest,
    ZipRefundRequest,
)

__all__ = [
    "REQUEST_CLASSES_BY_EVENT",
    "TRANSACTION_REQUESTS",
    "ErrorMessage",
    "TerminalMessage",
    "UnknownMessage",
    "parse_request",
    "parse_terminal_message",
]

# ---------------------------------------------------------------------------
# POS -> terminal
# ---------------------------------------------------------------------------

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


def parse_request(event: str, data: Mapping[str, Any] | None) -> Request:
    """Read a POS message (terminal side); RemoteProtocolError for an unknown event or bad data."""
    cls = REQUEST_CLASSES_BY_EVENT.get(event)
    if cls is None:
        raise RemoteProtocolError(f"{event!r} is not a POS request this terminal understands")
    return cls.from_data(data)


# ---------------------------------------------------------------------------
# Terminal -> POS
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage(FromTerminal):
    """``error`` (§9), e.g. ``NO_TRANSACTION`` in answer to a cancel."""

    error_reason: str | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownMessage(FromTerminal):
    """An event this POS does not handle (legacy ``login_response``, a POS-only event, ...)."""

    event: str = field(metadata=wire(event=True))


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
