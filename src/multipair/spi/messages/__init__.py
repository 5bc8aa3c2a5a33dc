"""Typed SPI message bodies: what the POS sends and what the terminal answers (PROTOCOL.md §7).

One module per message family, all declared the same way (STYLE.md 15):

- :mod:`._wire`: the declarative codec. A message declares its fields once,
  in wire order; validation (``InvalidRequest`` when built), writing
  (``to_data``), strict reading of a POS request (``from_data``:
  ``RemoteProtocolError``) and lenient reading of a terminal message
  (``parse``) are generic over that declaration.
- :mod:`.events` (event names, transaction types), :mod:`.base` (the
  bases, ids, :func:`build_message`), :mod:`.receipts` (options and
  printing flags, §7.1).
- Families: :mod:`.pairing` (§4, §5), :mod:`.transactions` (§7.2-7.11,
  §7.15, §7.17), :mod:`.preauth` (§7.16), :mod:`.settlement` (§7.14),
  :mod:`.status` (§7.18-7.21), :mod:`.pay_at_table` (§7.23; the POS's
  replies) and :mod:`.pay_at_table_terminal` (the terminal's requests).
- :mod:`.dispatch`: which class reads which event (:func:`parse_request`,
  :func:`parse_terminal_message`).

``to_data()`` returns the ``data`` object with the keys in the order
spi-client-js 2.8.3 sends them (vectors/request_messages.json), except the
zip requests, which follow 2.9 (§13.13). No I/O, no clock: this is protocol
core (STYLE.md 1).
"""

from __future__ import annotations

import dataclasses

from multipair.spi.messages._wire import (
    MAX_AMOUNT,
    as_bool,
    as_int,
    as_str,
    specs,
)
from multipair.spi.messages.base import (
    Request,
    RequestIds,
    TransactionRequest,
    build_message,
)
from multipair.spi.messages.dispatch import (
    REQUEST_CLASSES_BY_EVENT,
    TRANSACTION_REQUESTS,
    ErrorMessage,
    TerminalMessage,
    UnknownMessage,
    parse_request,
    parse_terminal_message,
)
from multipair.spi.messages.events import (
    Event,
    TxType,
)
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
    PAYMENT_SUMMARY_KEYS,
    BillDetailsReply,
    BillPaymentDetails,
    BillPaymentFlowEndedAck,
    OpenTable,
    OpenTablesReply,
    PayAtTableMessage,
    PayAtTableRequestMessage,
    PaymentHistoryEntry,
    SetTableConfigRequest,
    read_pay_at_table_request,
)
from multipair.spi.messages.pay_at_table_terminal import (
    PAYMENT_TYPES,
    BillPaymentFlowEndedRequest,
    BillPaymentRequest,
    GetBillDetailsRequest,
    GetOpenTablesRequest,
    GetTableConfigRequest,
    TerminalPayAtTableRequest,
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
from multipair.spi.messages.receipts import (
    PrintingConfig,
    ReceiptOptions,
)
from multipair.spi.messages.settlement import (
    SchemeTotals,
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
    "MAX_AMOUNT",
    "PAYMENT_SUMMARY_KEYS",
    "PAYMENT_TYPES",
    "REQUEST_CLASSES_BY_EVENT",
    "TRANSACTION_REQUESTS",
    "AccountVerifyRequest",
    "AuthCodeAdviceRequest",
    "AuthCodeRequired",
    "BatteryLevelChanged",
    "BillDetailsReply",
    "BillPaymentDetails",
    "BillPaymentFlowEndedAck",
    "BillPaymentFlowEndedRequest",
    "BillPaymentRequest",
    "CancelResponse",
    "CancelTransactionRequest",
    "CashoutRequest",
    "DropKeys",
    "DropKeysRequest",
    "ErrorMessage",
    "Event",
    "GetBillDetailsRequest",
    "GetLastTransactionRequest",
    "GetOpenTablesRequest",
    "GetTableConfigRequest",
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
    "PayAtTableRequestMessage",
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
    "TerminalPayAtTableRequest",
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
    "read_pay_at_table_request",
    "warm",
]


def warm() -> None:
    """Derive every message class's codec now, instead of at its first use.

    A lane's supervisor forks lanes from a template process: what the
    template derived before the fork is shared by every lane, what a lane
    derives itself costs it private memory (``specs`` reads type hints).
    """
    for value in list(globals().values()):
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            specs(value)
