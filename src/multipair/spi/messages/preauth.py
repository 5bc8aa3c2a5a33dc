"""Preauthorisations and account verification (PROTOCOL.md §7.16).

A preauthorisation is opened, topped up, partly cancelled, extended,
cancelled or completed, each by its own request naming the ``preauth_id``
the terminal gave when it opened. Their answers are transaction responses
(:class:`~multipair.spi.messages.transactions.TransactionResponse`).
Fields are declared in wire order; the codec is :mod:`._wire`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from multipair.spi.messages.base import TransactionRequest
from multipair.spi.messages.events import Event, TxType
from multipair.spi.messages.receipts import (
    AS_ALL_FLAGS,
    AS_OPTIONS,
    PrintingConfig,
    ReceiptOptions,
)

__all__ = [
    "AccountVerifyRequest",
    "PreauthCancellationRequest",
    "PreauthCompletionRequest",
    "PreauthExtendRequest",
    "PreauthOpenRequest",
    "PreauthPartialCancellationRequest",
    "PreauthTopupRequest",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountVerifyRequest(TransactionRequest):
    """``account_verify`` (§7.16): check a card; no options or printing config."""

    event: ClassVar[Event] = Event.ACCOUNT_VERIFY
    id_prefix: ClassVar[str] = "prav"
    tx_type: ClassVar[TxType] = TxType.ACCOUNT_VERIFY
    response_event: ClassVar[Event] = Event.ACCOUNT_VERIFY_RESPONSE

    pos_ref_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthOpenRequest(TransactionRequest):
    """``preauth`` (§7.16): open a preauthorisation for ``preauth_amount``."""

    event: ClassVar[Event] = Event.PREAUTH
    id_prefix: ClassVar[str] = "prac"
    tx_type: ClassVar[TxType] = TxType.PREAUTH
    response_event: ClassVar[Event] = Event.PREAUTH_RESPONSE

    pos_ref_id: str
    preauth_amount: int
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


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
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


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
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthExtendRequest(TransactionRequest):
    """``preauth_extend`` (§7.16): extend the life of an open preauthorisation."""

    event: ClassVar[Event] = Event.PREAUTH_EXTEND
    id_prefix: ClassVar[str] = "prext"
    tx_type: ClassVar[TxType] = TxType.PREAUTH_EXTEND
    response_event: ClassVar[Event] = Event.PREAUTH_EXTEND_RESPONSE

    pos_ref_id: str
    preauth_id: str
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthCancellationRequest(TransactionRequest):
    """``preauth_cancellation`` (§7.16): release an open preauthorisation entirely."""

    event: ClassVar[Event] = Event.PREAUTH_CANCELLATION
    id_prefix: ClassVar[str] = "prac"
    tx_type: ClassVar[TxType] = TxType.PREAUTH_CANCELLATION
    response_event: ClassVar[Event] = Event.PREAUTH_CANCELLATION_RESPONSE

    pos_ref_id: str
    preauth_id: str
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)


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
    config: PrintingConfig = field(default_factory=PrintingConfig, metadata=AS_ALL_FLAGS)
    options: ReceiptOptions = field(default_factory=ReceiptOptions, metadata=AS_OPTIONS)
