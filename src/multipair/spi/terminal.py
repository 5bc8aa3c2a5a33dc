"""The terminal side of SPI, sans I/O: what a simulated EFTPOS terminal decides.

Rules this module keeps (PROTOCOL.md §10, §13.16):

- It does no I/O and reads no clock. The caller feeds websocket text and
  ``now`` (seconds since the epoch) in, and takes events
  (:meth:`Terminal.events_received`), frames to send
  (:meth:`Terminal.data_to_send`) and the next deadline
  (:meth:`Terminal.next_deadline`) out, like websockets' ``protocol.py``.
- Three state machines, each a table: the link (:class:`LinkState`), pairing
  (:class:`PairingState`) and the current transaction (:class:`TxState`).
  A move the table does not allow raises :class:`LocalProtocolError`; that is
  the caller's bug (e.g. "confirm pairing" when no pairing waits).
- Nothing the POS sends can make it raise: bad frames, tampered HMACs,
  unknown events and malformed fields become :class:`FrameRejected` or
  :class:`UnexpectedMessage` events, counted in :class:`TerminalCounters`.
- Every reply echoes the request's id and ``pos_ref_id`` (§2.5, §13.9);
  frames go out with upper-case ``enc`` and ``hmac`` (§3.2) and no ``pos_id``.
- The caller (the simulated customer, bank and merchant) chooses outcomes:
  the terminal never approves or declines on its own, except where the
  protocol leaves no choice (busy, cancel, lookups).
- What a terminal keeps across restarts is :class:`TerminalState`, which
  round-trips through JSON (secrets included: it is the terminal's own
  storage, so the file must be protected by whoever writes it).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Final, Literal, TypeVar

import orjson

from multipair.exceptions import CryptoError, LocalProtocolError
from multipair.spi.crypto import (
    Secrets,
    confirmation_code,
    dh_public_key,
    dh_secret_to_key,
    dh_shared_secret,
    generate_private_key,
    parse_public_key,
)
from multipair.spi.envelope import (
    Generation,
    JsonObject,
    Message,
    Received,
    RejectedFrame,
    RejectReason,
    decode_frame,
    encode_frame,
    format_local_datetime,
    generation_from_subprotocol,
    terminal_inner_json,
)

__all__ = [
    "BUSY_DETAIL",
    "HISTORY_LIMIT",
    "PRINTERLESS_MODELS",
    "TRANSACTION_EVENTS",
    "AuthCodeReceived",
    "CancelRequested",
    "CloseConnection",
    "FrameRejected",
    "KeysRolled",
    "LinkState",
    "MessageIn",
    "MessageOut",
    "Outcome",
    "Paired",
    "PairingCodeReady",
    "PairingFailed",
    "PairingRequested",
    "PairingState",
    "PosIdMismatch",
    "PosInfoReceived",
    "PreauthBalance",
    "PrintRequested",
    "SettlementBatch",
    "SignatureDecided",
    "Terminal",
    "TerminalCounters",
    "TerminalEvent",
    "TerminalOptions",
    "TerminalProfile",
    "TerminalState",
    "TransactionFinished",
    "TransactionRecord",
    "TransactionRefused",
    "TransactionRequest",
    "TransactionRequested",
    "TxState",
    "UnexpectedMessage",
    "Unpaired",
]

HISTORY_LIMIT: Final = 20
"""Finished transactions kept for ``get_transaction`` (§7.10 asks for at least 10)."""

PRINTERLESS_MODELS: Final = frozenset({"E355", "CM5"})
"""Terminal models without a printer (§7.1, §13.12)."""

BUSY_DETAIL: Final = "Payment interface is busy, cannot process operation at this time"
_NO_TX_DETAIL: Final = "No transactions have been performed"
_HOST_DETAIL: Final = "see 'host_response_text' for details"


# --------------------------------------------------------------------------
# State machines (tables)


class LinkState(Enum):
    """Is a POS connected right now."""

    DISCONNECTED = "disconnected"
    CONNECTED = "connected"


class PairingState(Enum):
    """Pairing, from the terminal's point of view (§4)."""

    UNPAIRED = "unpaired"
    AWAITING_KEY_RESPONSE = "awaiting_key_response"  # key_request sent
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # key_check sent, code on screen
    PAIRED = "paired"


class TxState(Enum):
    """The one operation a terminal runs at a time (§7.1)."""

    IDLE = "idle"
    CARD_PENDING = "card_pending"  # before the point of no return: cancellable
    PROCESSING = "processing"  # past the point of no return
    AWAITING_SIGNATURE = "awaiting_signature"
    AWAITING_AUTH_CODE = "awaiting_auth_code"  # cancellable: the user can only cancel (§7.10 R3)


_LINK_TRANSITIONS: Final[dict[LinkState, frozenset[LinkState]]] = {
    LinkState.DISCONNECTED: frozenset({LinkState.CONNECTED}),
    LinkState.CONNECTED: frozenset({LinkState.DISCONNECTED}),
}

_PAIRING_TRANSITIONS: Final[dict[PairingState, frozenset[PairingState]]] = {
    PairingState.UNPAIRED: frozenset({PairingState.AWAITING_KEY_RESPONSE}),
    PairingState.AWAITING_KEY_RESPONSE: frozenset(
        {
            PairingState.AWAITING_KEY_RESPONSE,  # a fresh pair_request restarts
            PairingState.AWAITING_CONFIRMATION,
            PairingState.UNPAIRED,
        }
    ),
    PairingState.AWAITING_CONFIRMATION: frozenset(
        {PairingState.PAIRED, PairingState.UNPAIRED, PairingState.AWAITING_KEY_RESPONSE}
    ),
    PairingState.PAIRED: frozenset({PairingState.UNPAIRED, PairingState.AWAITING_KEY_RESPONSE}),
}

_TX_TRANSITIONS: Final[dict[TxState, frozenset[TxState]]] = {
    TxState.IDLE: frozenset({TxState.CARD_PENDING}),
    TxState.CARD_PENDING: frozenset(
        {TxState.PROCESSING, TxState.AWAITING_SIGNATURE, TxState.AWAITING_AUTH_CODE, TxState.IDLE}
    ),
    TxState.PROCESSING: frozenset(
        {TxState.AWAITING_SIGNATURE, TxState.AWAITING_AUTH_CODE, TxState.IDLE}
    ),
    TxState.AWAITING_SIGNATURE: frozenset({TxState.PROCESSING, TxState.IDLE}),
    TxState.AWAITING_AUTH_CODE: frozenset({TxState.PROCESSING, TxState.IDLE}),
}

_CANCELLABLE: Final = frozenset({TxState.CARD_PENDING, TxState.AWAITING_AUTH_CODE})


_S = TypeVar("_S", LinkState, PairingState, TxState)


def _move(table: dict[_S, frozenset[_S]], current: _S, new: _S, what: str) -> _S:
    if new not in table[current]:
        raise LocalProtocolError(f"{what}: cannot go from {current.value} to {new.value}")
    return new


# --------------------------------------------------------------------------
# Lenient readers of POS data (§2.4: parse leniently; never raise)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    return None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


# --------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How the bank (the caller) decides the current transaction."""

    approved: bool
    host_response_code: str = "000"
    host_response_text: str = "APPROVED"
    error_reason: str | None = None
    error_detail: str | None = None
    partial_amount: int | None = None
    """Approved amount in cents when less than requested (partial approval)."""
    auth_code: str | None = None
    """Authorisation code to report instead of a generated one (phone auth)."""

    @classmethod
    def approve(cls, *, auth_code: str | None = None) -> Outcome:
        """``000 APPROVED``."""
        return cls(approved=True, auth_code=auth_code)

    @classmethod
    def decline(cls, code: str = "51", text: str = "DECLINED") -> Outcome:
        """A host decline, e.g. ``51 DECLINED`` (insufficient funds)."""
        return cls(
            approved=False,
            host_response_code=code,
            host_response_text=text,
            error_reason="HOST_DECLINED",
            error_detail=_HOST_DETAIL,
        )

    @classmethod
    def partial(cls, amount_cents: int) -> Outcome:
        """Partial approval: ``002 APPROVED`` for ``amount_cents``."""
        return cls(approved=True, host_response_code="002", partial_amount=amount_cents)

    @classmethod
    def cancelled(cls) -> Outcome:
        """The customer or the POS cancelled: ``511 TRANS CANCELLED`` (§7.1)."""
        return cls(
            approved=False,
            host_response_code="511",
            host_response_text="TRANS CANCELLED",
            error_reason="TXN_CANCELLED",
            error_detail=_HOST_DETAIL,
        )

    @classmethod
    def signature_declined(cls) -> Outcome:
        """The merchant declined the customer's signature."""
        return cls(
            approved=False,
            host_response_code="512",
            host_response_text="SIGNATURE DECLINED",
            error_reason="SIGNATURE_DECLINED",
            error_detail=_HOST_DETAIL,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRequest:
    """A transaction request as the terminal received it (§7)."""

    event: str
    message_id: str
    pos_ref_id: str | None
    response_event: str
    transaction_type: str
    amount_cents: int = 0
    """The request's main amount (purchase, refund, cash, preauth, top-up, … amount)."""
    tip_amount: int = 0
    cash_amount: int = 0
    surcharge_amount: int = 0
    preauth_id: str | None = None
    data: JsonObject = field(default_factory=dict, repr=False)
    """The request's ``data`` as sent (JSON edge)."""
    received_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRecord:
    """A finished transaction the terminal remembers (§7.10, §7.11)."""

    pos_ref_id: str | None
    request_event: str
    response_event: str
    request_id: str
    success: bool
    data: JsonObject = field(repr=False)
    """The complete response ``data`` (nested under ``tx`` by get_transaction)."""
    finished_at: float
    sent: bool
    """Whether the response went out on a connection (False: finished while disconnected)."""

    def to_json(self) -> JsonObject:
        """JSON form for :class:`TerminalState` persistence."""
        return {
            "pos_ref_id": self.pos_ref_id,
            "request_event": self.request_event,
            "response_event": self.response_event,
            "request_id": self.request_id,
            "success": self.success,
            "data": self.data,
            "finished_at": self.finished_at,
            "sent": self.sent,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> TransactionRecord:
        """Inverse of :meth:`to_json`."""
        return cls(
            pos_ref_id=obj.get("pos_ref_id"),
            request_event=str(obj["request_event"]),
            response_event=str(obj["response_event"]),
            request_id=str(obj["request_id"]),
            success=bool(obj["success"]),
            data=dict(obj["data"]),
            finished_at=float(obj["finished_at"]),
            sent=bool(obj.get("sent", True)),
        )


@dataclass(slots=True)
class PreauthBalance:
    """An open (or closed) preauthorisation (§7.16)."""

    balance: int
    open: bool = True


@dataclass(slots=True)
class SettlementBatch:
    """Approved totals since the last settlement (cents), for settle responses (§7.14)."""

    purchase_count: int = 0
    purchase_value: int = 0
    refund_count: int = 0
    refund_value: int = 0
    cash_count: int = 0
    cash_value: int = 0


@dataclass(slots=True)
class TerminalState:
    """What a terminal keeps across restarts: its pairing and its memory of transactions."""

    serial_number: str
    pos_id: str | None = None
    secrets: Secrets | None = None
    history: list[TransactionRecord] = field(default_factory=list)
    """Finished transactions with a ``pos_ref_id``, oldest first, at most ``HISTORY_LIMIT``."""
    last_tx: TransactionRecord | None = None
    preauths: dict[str, PreauthBalance] = field(default_factory=dict)
    batch: SettlementBatch = field(default_factory=SettlementBatch)
    sequence: int = 0
    """Source of STANs, RRNs and preauth ids."""

    @property
    def paired(self) -> bool:
        """True when the terminal holds keys for a POS."""
        return self.secrets is not None

    def find(self, pos_ref_id: str) -> TransactionRecord | None:
        """The most recent finished transaction with this ``pos_ref_id``."""
        for record in reversed(self.history):
            if record.pos_ref_id == pos_ref_id:
                return record
        return None

    def remember(self, record: TransactionRecord) -> None:
        """Add a finished transaction to the history and make it the last one."""
        if record.pos_ref_id is not None:
            self.history = [r for r in self.history if r.pos_ref_id != record.pos_ref_id]
            self.history.append(record)
            del self.history[:-HISTORY_LIMIT]
        self.last_tx = record

    def to_json(self) -> JsonObject:
        """JSON form, secrets included: only for the terminal's own storage."""
        return {
            "version": 1,
            "serial_number": self.serial_number,
            "pos_id": self.pos_id,
            "secrets": None
            if self.secrets is None
            else {"enc_key": self.secrets.enc_key, "hmac_key": self.secrets.hmac_key},
            "history": [r.to_json() for r in self.history],
            "last_tx": None if self.last_tx is None else self.last_tx.to_json(),
            "preauths": {
                k: {"balance": v.balance, "open": v.open} for k, v in self.preauths.items()
            },
            "batch": {
                "purchase_count": self.batch.purchase_count,
                "purchase_value": self.batch.purchase_value,
                "refund_count": self.batch.refund_count,
                "refund_value": self.batch.refund_value,
                "cash_count": self.batch.cash_count,
                "cash_value": self.batch.cash_value,
            },
            "sequence": self.sequence,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> TerminalState:
        """Inverse of :meth:`to_json`; a malformed document raises ``KeyError``/``ValueError``."""
        secrets_obj = obj.get("secrets")
        last = obj.get("last_tx")
        return cls(
            serial_number=str(obj["serial_number"]),
            pos_id=obj.get("pos_id"),
            secrets=None
            if secrets_obj is None
            else Secrets(enc_key=secrets_obj["enc_key"], hmac_key=secrets_obj["hmac_key"]),
            history=[TransactionRecord.from_json(r) for r in obj.get("history", [])],
            last_tx=None if last is None else TransactionRecord.from_json(last),
            preauths={
                str(k): PreauthBalance(balance=int(v["balance"]), open=bool(v["open"]))
                for k, v in obj.get("preauths", {}).items()
            },
            batch=SettlementBatch(**{k: int(v) for k, v in obj.get("batch", {}).items()}),
            sequence=int(obj.get("sequence", 0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalProfile:
    """The terminal's identity as it shows in responses (merchant, ids, model)."""

    terminal_id: str = "100000000001"
    merchant_id: str = "10000001"
    merchant_name: str = "MULTIPAIR SIM STORE"
    merchant_addr: str = "201 Kent Street"
    merchant_city: str = "Sydney"
    merchant_postcode: str = "2000"
    merchant_country: str = "Australia"
    merchant_acquirer: str = "EFTPOS FROM SIM BANK"
    scheme_name: str = "Visa"
    masked_pan: str = "............4242"
    expiry_date: str = "1230"
    account_type: str = "CREDIT"
    auth_centre_phone_number: str = "1800 000 000"

    @classmethod
    def for_serial(cls, serial_number: str) -> TerminalProfile:
        """A profile whose terminal id is derived from the serial's digits (stable)."""
        digits = "".join(ch for ch in serial_number if ch.isdigit())
        return cls(terminal_id=("1" + digits.rjust(11, "0"))[-12:])


@dataclass(slots=True)
class TerminalOptions:
    """Behaviour knobs; the caller may change them at any time."""

    terminal_model: str = "SIM-T1"
    """``E355`` / ``CM5`` model a terminal without a printer (§7.1, §13.12)."""
    answer_pings: bool = True
    pong_delay: float = 0.0
    """Seconds before a pong goes out (to exercise the POS's 5 s pong timeout, §5.4)."""
    ping_interval: float | None = None
    """The terminal's own pings (§5.4); None: never ping."""
    pong_timeout: float = 5.0
    max_missed_pongs: int = 2
    answer_cancel: bool = True
    """False: ignore cancel_transaction entirely (the POS's "no answer" rule, §7.6)."""
    cancel_completion_delay: float | None = 0.0
    """Seconds from an accepted cancel to the failed transaction response; None: the caller."""
    get_transaction_error: str | None = None
    """Answer every get_transaction with this error reason (e.g. ``INTERNAL_ERROR``)."""
    pos_spi_token: str | None = None
    """Sent as ``provision_pos_spi_token`` after each connection's first pong (§13.10)."""
    battery_level: int = 100
    charging: bool = True


@dataclass(slots=True)
class TerminalCounters:
    """Frames seen by this terminal since it started."""

    frames_in: int = 0
    frames_out: int = 0
    frames_rejected: int = 0
    connections: int = 0


# --------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingRequested:
    """A POS sent ``pair_request``; ``key_request`` went out."""

    type: ClassVar[str] = "pairing_requested"
    pos_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingCodeReady:
    """Keys derived and ``key_check`` sent: the code both screens show (§3.7)."""

    type: ClassVar[str] = "pairing_code_ready"
    confirmation_code: str
    pos_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Paired:
    """The terminal user confirmed; ``pair_response {success: true}`` went out."""

    type: ClassVar[str] = "paired"
    pos_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingFailed:
    """A pairing in progress ended without keys."""

    type: ClassVar[str] = "pairing_failed"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unpaired:
    """The keys were dropped, by the POS (``drop_keys`` received) or the terminal user."""

    type: ClassVar[str] = "unpaired"
    by: Literal["pos", "terminal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRequested:
    """A transaction started; the caller now decides how it goes."""

    type: ClassVar[str] = "transaction_requested"
    tx: TransactionRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRefused:
    """A transaction request was answered at once with a failure (busy, missing arguments)."""

    type: ClassVar[str] = "transaction_refused"
    tx: TransactionRequest
    error_reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested:
    """``cancel_transaction`` arrived; ``accepted`` tells whether it will cancel."""

    type: ClassVar[str] = "cancel_requested"
    pos_ref_id: str | None
    accepted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureDecided:
    """The POS accepted or declined the signature; the caller completes the transaction."""

    type: ClassVar[str] = "signature_decided"
    accepted: bool
    pos_ref_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeReceived:
    """The POS sent the phone authorisation code; the caller completes the transaction."""

    type: ClassVar[str] = "auth_code_received"
    code: str
    pos_ref_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionFinished:
    """The current transaction ended and was recorded (sent or not)."""

    type: ClassVar[str] = "transaction_finished"
    record: TransactionRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysRolled:
    """The terminal switched to the next keys (§5.7)."""

    type: ClassVar[str] = "keys_rolled"
    fingerprint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameRejected:
    """An incoming frame was dropped. ``reason`` is a :class:`RejectReason` value or
    ``plain_after_pairing``; ``detail`` never holds key material."""

    type: ClassVar[str] = "frame_rejected"
    reason: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PosInfoReceived:
    """``set_pos_info`` arrived and was acknowledged (§7.21)."""

    type: ClassVar[str] = "pos_info_received"
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintRequested:
    """``print`` arrived and was acknowledged (§7.20)."""

    type: ClassVar[str] = "print_requested"
    key: str | None
    payload: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection:
    """The terminal wants the connection closed (e.g. the POS stopped answering pings)."""

    type: ClassVar[str] = "close_connection"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnexpectedMessage:
    """A well-formed message the terminal ignores in its current state."""

    type: ClassVar[str] = "unexpected_message"
    event: str
    message_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PosIdMismatch:
    """POS ids disagree (URL query, inner and outer ``pos_id``, paired POS): logged, not fatal."""

    type: ClassVar[str] = "pos_id_mismatch"
    expected: str | None
    received: str
    where: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageIn:
    """Trace (only with ``trace=True``): a message was accepted."""

    type: ClassVar[str] = "message_in"
    message: Message
    encrypted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageOut:
    """Trace (only with ``trace=True``): a message was queued for sending."""

    type: ClassVar[str] = "message_out"
    message: Message
    encrypted: bool


TerminalEvent = (
    PairingRequested
    | PairingCodeReady
    | Paired
    | PairingFailed
    | Unpaired
    | TransactionRequested
    | TransactionRefused
    | CancelRequested
    | SignatureDecided
    | AuthCodeReceived
    | TransactionFinished
    | KeysRolled
    | FrameRejected
    | PosInfoReceived
    | PrintRequested
    | CloseConnection
    | UnexpectedMessage
    | PosIdMismatch
    | MessageIn
    | MessageOut
)


# --------------------------------------------------------------------------
# Transaction kinds (§7.2-7.17)


@dataclass(frozen=True, slots=True)
class _TxSpec:
    response_event: str
    transaction_type: str
    amount_field: str | None
    needs_pos_ref_id: bool = True


_TX_SPECS: Final[dict[str, _TxSpec]] = {
    "purchase": _TxSpec("purchase_response", "PURCHASE", "purchase_amount"),
    "refund": _TxSpec("refund_response", "REFUND", "refund_amount"),
    "cash": _TxSpec("cash_response", "CASH", "cash_amount"),
    "moto_purchase": _TxSpec("moto_purchase_response", "MOTO", "purchase_amount"),
    "account_verify": _TxSpec("account_verify_response", "VERIFY", None),
    "preauth": _TxSpec("preauth_response", "PRE-AUTH", "preauth_amount"),
    "preauth_topup": _TxSpec("preauth_topup_response", "TOPUP", "topup_amount"),
    "preauth_partial_cancellation": _TxSpec(
        "preauth_partial_cancellation_response", "CANCEL", "preauth_cancel_amount"
    ),
    "preauth_extend": _TxSpec("preauth_extend_response", "PRE-AUTH EXT", None),
    "preauth_cancellation": _TxSpec("preauth_cancellation_response", "PRE-AUTH CANCEL", None),
    "completion": _TxSpec("completion_response", "PCOMP", "completion_amount"),
    "purchase_zip": _TxSpec("purchase_zip_response", "PURCHASE", "purchase_amount"),
    "refund_zip": _TxSpec("refund_zip_response", "REFUND", "refund_amount"),
    "reverse_transaction": _TxSpec("reverse_transaction_response", "REVERSAL", None),
    "settle": _TxSpec("settle_response", "SETTLE", None, needs_pos_ref_id=False),
    "settlement_enquiry": _TxSpec(
        "settlement_enquiry_response", "SETTLEMENT ENQUIRY", None, needs_pos_ref_id=False
    ),
}

TRANSACTION_EVENTS: Final = frozenset(_TX_SPECS)
_PREAUTH_EVENTS: Final = frozenset(
    {
        "preauth_topup",
        "preauth_partial_cancellation",
        "preauth_extend",
        "preauth_cancellation",
        "completion",
    }
)
_SETTLE_SCHEMES: Final = ("Debit", "MasterCard", "Visa", "Amex", "Diners", "JCB", "UnionPay")


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}AUD{cents // 100}.{cents % 100:02d}"


# --------------------------------------------------------------------------
# The session


@dataclass(slots=True)
class _KeyExchange:
    message_id: str
    pos_id: str
    enc_private: int
    hmac_private: int


class Terminal:
    """One simulated terminal's SPI session (see the module docstring for its rules)."""

    def __init__(
        self,
        *,
        state: TerminalState,
        conn_prefix: str = "C",
        upper_enc: bool = True,
        options: TerminalOptions | None = None,
        profile: TerminalProfile | None = None,
        trace: bool = False,
    ) -> None:
        self.state = state
        self._options = options if options is not None else TerminalOptions()
        self.profile = (
            profile if profile is not None else TerminalProfile.for_serial(state.serial_number)
        )
        self.counters = TerminalCounters()
        self.state_version = 0
        """Bumped whenever :attr:`state` changes in a way worth persisting."""
        self._conn_prefix = conn_prefix
        self._upper_enc = upper_enc
        self._trace = trace
        self._link = LinkState.DISCONNECTED
        self._pairing = PairingState.PAIRED if state.secrets is not None else PairingState.UNPAIRED
        self._tx_state = TxState.IDLE
        self._tx: TransactionRequest | None = None
        self._outgoing: list[str] = []
        self._events: list[TerminalEvent] = []
        # Per connection.
        self._conn_id: str | None = None
        self._seq = 0
        self.generation: Generation | None = None
        self.query_pos_id: str | None = None
        self._pong_sent = False
        # Pairing in progress.
        self._exchange: _KeyExchange | None = None
        self._pending_secrets: Secrets | None = None
        self._pending_pos_id: str | None = None
        self._code: str | None = None
        # Key rollover waiting for the POS's confirmation: (request id, next keys).
        self._roll: tuple[str, Secrets] | None = None
        # Timers.
        self._next_ping_at: float | None = None
        self._pong_due_at: float | None = None
        self._last_ping_id: str | None = None
        self._missed_pongs = 0
        self._delayed_pongs: list[tuple[float, str]] = []
        self._cancel_complete_at: float | None = None
        self._cancelled = False
        self._signature_request_id: str | None = None
        self._responses = _Responses(state, self.profile, self._options)

    # ------------------------------------------------------------------ views

    @property
    def options(self) -> TerminalOptions:
        """Behaviour knobs: change their fields at any time (the object itself stays)."""
        return self._options

    @property
    def link_state(self) -> LinkState:
        """Whether a POS is connected."""
        return self._link

    @property
    def connected(self) -> bool:
        """True while a POS connection is open."""
        return self._link is LinkState.CONNECTED

    @property
    def pairing_state(self) -> PairingState:
        """Where pairing stands."""
        return self._pairing

    @property
    def tx_state(self) -> TxState:
        """Where the current transaction stands."""
        return self._tx_state

    @property
    def current_tx(self) -> TransactionRequest | None:
        """The transaction being run, if any."""
        return self._tx

    @property
    def conn_id(self) -> str | None:
        """This connection's id as sent in pongs (``C1``, ``C2`` …)."""
        return self._conn_id

    @property
    def confirmation_code(self) -> str | None:
        """The pairing code while a pairing waits for confirmation."""
        return self._code

    @property
    def key_rollover_pending(self) -> bool:
        """True between ``request_use_next_keys`` and the POS's valid reply."""
        return self._roll is not None

    @property
    def has_printer(self) -> bool:
        """False for the printer-less models (§7.1)."""
        return self.options.terminal_model.upper() not in PRINTERLESS_MODELS

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> list[str]:
        """Frames to write to the websocket, in order; the list is emptied."""
        out, self._outgoing = self._outgoing, []
        return out

    def events_received(self) -> list[TerminalEvent]:
        """Events since the last call, in order; the list is emptied."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        times = [
            t
            for t in (self._next_ping_at, self._pong_due_at, self._cancel_complete_at)
            if t is not None
        ]
        times.extend(due for due, _ in self._delayed_pongs)
        return min(times) if times else None

    # ------------------------------------------------------------------ link

    def connection_made(
        self, now: float, *, subprotocol: str | None = None, query_pos_id: str | None = None
    ) -> None:
        """A POS connected (any ``spi.2.x.y`` sub-protocol; ``?posId=`` if it sent one)."""
        self._link = _move(_LINK_TRANSITIONS, self._link, LinkState.CONNECTED, "connection")
        self.counters.connections += 1
        self._conn_id = f"{self._conn_prefix}{self.counters.connections}"
        self._seq = 0
        self._pong_sent = False
        self.generation = generation_from_subprotocol(subprotocol)
        self.query_pos_id = query_pos_id
        if query_pos_id is not None and self.state.pos_id not in (None, query_pos_id):
            # §13.2: log and go by the messages.
            self._event(
                PosIdMismatch(expected=self.state.pos_id, received=query_pos_id, where="url")
            )
        self._missed_pongs = 0
        self._last_ping_id = None
        self._pong_due_at = None
        self._schedule_ping(now)

    def connection_lost(self, now: float) -> None:
        """The POS connection closed. A transaction in progress goes on (§10 item 15)."""
        self._link = _move(_LINK_TRANSITIONS, self._link, LinkState.DISCONNECTED, "connection")
        self._outgoing.clear()
        self._delayed_pongs.clear()
        self._next_ping_at = None
        self._pong_due_at = None
        self._conn_id = None
        # §5.7: the terminal switches only on a valid reply; without one it stays.
        self._roll = None
        if self._pairing in (
            PairingState.AWAITING_KEY_RESPONSE,
            PairingState.AWAITING_CONFIRMATION,
        ):
            # A half-made pairing dies with its connection; the POS retries with a
            # fresh pair_request (§4.5).
            self._abandon_pairing("connection lost")

    # ------------------------------------------------------------------ input

    def receive_text(self, text: str | bytes, now: float) -> None:
        """Feed one websocket message. Never raises for anything the POS sends."""
        if self._link is not LinkState.CONNECTED:
            raise LocalProtocolError("receive_text while no POS is connected")
        self.counters.frames_in += 1
        got = decode_frame(text, self._active_secrets())
        if isinstance(got, RejectedFrame):
            still = self._try_rolled_keys(text, got, now) if self._roll is not None else got
            if still is not None:
                self._reject(still.reason.value, still.detail)
            return
        message = got.message
        if self._trace:
            self._event(MessageIn(message=message, encrypted=got.encrypted))
        self._check_pos_ids(got)
        if not got.encrypted:
            self._on_plain(message, now)
            return
        handler = self._HANDLERS.get(message.event)
        if self._pairing is not PairingState.PAIRED and message.event not in (
            "drop_keys",
            "ping",
            "pong",
        ):
            self._unexpected(message, f"not paired ({self._pairing.value})")
            return
        if handler is None:
            if message.event in _TX_SPECS:
                self._on_transaction_request(message, now)
            else:
                self._unexpected(message, "unknown or unsupported event")
            return
        handler(self, message, now)

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now``: pongs, pings, pong timeouts, cancel completions."""
        if self._delayed_pongs:
            due = [(t, i) for t, i in self._delayed_pongs if t <= now]
            self._delayed_pongs = [(t, i) for t, i in self._delayed_pongs if t > now]
            for _, ping_id in due:
                self._send_pong(ping_id, now)
        if self._cancel_complete_at is not None and self._cancel_complete_at <= now:
            self._cancel_complete_at = None
            if self._tx is not None:
                self.complete_transaction(Outcome.cancelled(), now)
        if self._pong_due_at is not None and self._pong_due_at <= now:
            self._pong_due_at = None
            self._missed_pongs += 1
            if self._missed_pongs >= self.options.max_missed_pongs:
                self._next_ping_at = None
                self._event(CloseConnection(reason="the POS did not answer pings"))
            else:
                self._next_ping_at = now  # §5.4: after a miss, ping again at once
        if self._next_ping_at is not None and self._next_ping_at <= now:
            self._send_ping(now)

    # ------------------------------------------------------------------ pairing (caller)

    def confirm_pairing(self, now: float) -> None:
        """The terminal user pressed YES: send ``pair_response {success: true}`` (§4.4)."""
        if self._pairing is not PairingState.AWAITING_CONFIRMATION:
            raise LocalProtocolError(f"no pairing awaits confirmation ({self._pairing.value})")
        secrets, pos_id = self._pending_secrets, self._pending_pos_id
        if secrets is None or pos_id is None:  # pragma: no cover - guarded by the state
            raise LocalProtocolError("pairing keys missing")
        self._send("pair_response", {"success": True}, now)
        self._set_pairing(PairingState.PAIRED)
        self.state.secrets = secrets
        self.state.pos_id = pos_id
        self._clear_pairing()
        self._changed()
        self._event(Paired(pos_id=pos_id))
        self._schedule_ping(now)

    def reject_pairing(self, now: float) -> None:
        """The terminal user pressed NO: send ``pair_response {success: false}``."""
        if self._pairing is not PairingState.AWAITING_CONFIRMATION:
            raise LocalProtocolError(f"no pairing awaits confirmation ({self._pairing.value})")
        self._send("pair_response", {"success": False}, now)
        self._abandon_pairing("rejected on the terminal")

    def unpair(self, now: float) -> None:
        """The terminal user unpaired: send ``drop_keys`` (best effort) and forget the keys."""
        if self._pairing is PairingState.UNPAIRED:
            raise LocalProtocolError("not paired")
        if self._pairing is not PairingState.PAIRED:
            self._send("drop_keys", None, now)
            self._abandon_pairing("cancelled on the terminal")
            return
        self._send("drop_keys", None, now)
        self._forget_keys()
        self._event(Unpaired(by="terminal"))

    def start_key_rollover(self, now: float, *, switch: bool = True) -> None:
        """Send ``request_use_next_keys`` under the current keys (§5.7).

        With ``switch`` the terminal moves to the next keys once a valid
        ``response_use_next_keys`` arrives under them. ``switch=False`` models
        a terminal that loses the reply and stays on the old keys (§13.6).
        """
        if self._pairing is not PairingState.PAIRED or self.state.secrets is None:
            raise LocalProtocolError("key rollover needs a paired terminal")
        self._require_connected("key rollover")
        if self._roll is not None:
            raise LocalProtocolError("a key rollover is already waiting for the POS")
        message_id = self._send("request_use_next_keys", None, now)
        if switch:
            self._roll = (message_id, self.state.secrets.rolled())

    def options_changed(self, now: float) -> None:
        """Re-plan the terminal's own pings after :attr:`options` changed."""
        interval = self._options.ping_interval
        if interval is None:
            self._next_ping_at = None
            self._pong_due_at = None
        elif self._next_ping_at is None or self._next_ping_at > now + interval:
            self._schedule_ping(now)

    def send_pos_spi_token(self, token: str, now: float) -> None:
        """Send ``provision_pos_spi_token`` (§13.10); the POS must not answer it."""
        self._require_paired_link("provision_pos_spi_token")
        self._send("provision_pos_spi_token", {"pos_spi_auth_token": token}, now)

    def send_battery_level(self, level: int, now: float) -> None:
        """Send the unsolicited ``battery_level_changed`` advice (§7.18)."""
        self._require_paired_link("battery_level_changed")
        self.options.battery_level = level
        self._send("battery_level_changed", {"battery_level": level}, now)

    def inject_raw(self, text: str) -> None:
        """Fault injection: queue ``text`` as is (garbage, a forged frame …)."""
        self._require_connected("inject")
        self._outgoing.append(text)
        self.counters.frames_out += 1

    def inject_bad_signature(self, now: float, event: str = "ping") -> None:
        """Fault injection: queue a frame encrypted with the keys but carrying a wrong ``hmac``."""
        self._require_paired_link("inject")
        secrets = self.state.secrets
        assert secrets is not None
        frame = orjson.loads(self._encode(self._message(event, None, now), secrets))
        mac = str(frame["hmac"])
        frame["hmac"] = ("0" if mac[0] != "0" else "1") + mac[1:]
        self.inject_raw(orjson.dumps(frame).decode())

    # ------------------------------------------------------------------ transaction (caller)

    def pass_point_of_no_return(self, now: float) -> None:
        """The card was read and sent to the bank: a cancel now fails (§7.6)."""
        self._set_tx(TxState.PROCESSING)

    def send_txn_update(self, text: str, now: float, code: int = 0) -> None:
        """Send ``txn_update_message`` with what the screen says (§7.9)."""
        tx = self._require_tx("txn_update_message")
        if self.connected and self._pairing is PairingState.PAIRED:
            self._send(
                "txn_update_message",
                {
                    "display_message_code": code,
                    "display_message_text": text,
                    "pos_ref_id": tx.pos_ref_id,
                },
                now,
            )

    def require_signature(self, now: float) -> None:
        """Ask the POS to check the customer's signature (§7.7)."""
        tx = self._require_tx("signature_required")
        self._set_tx(TxState.AWAITING_SIGNATURE)
        data = {
            "pos_ref_id": tx.pos_ref_id,
            "merchant_receipt": self._responses.signature_receipt(tx),
        }
        self._signature_request_id = self._send_if_linked("signature_required", data, now)

    def require_auth_code(self, now: float) -> None:
        """Ask the POS for a phone authorisation code (§7.8)."""
        tx = self._require_tx("authorisation_code_required")
        self._set_tx(TxState.AWAITING_AUTH_CODE)
        data = {
            "pos_ref_id": tx.pos_ref_id,
            "auth_centre_phone_number": self.profile.auth_centre_phone_number,
            "merchant_id": self.profile.merchant_id,
        }
        self._send_if_linked("authorisation_code_required", data, now)

    def complete_transaction(self, outcome: Outcome, now: float, *, send: bool = True) -> None:
        """Finish the current transaction with ``outcome`` and remember it.

        ``send=False`` models "the result was produced but the socket dropped
        before it went out": the record is kept (for get_transaction) and
        nothing is sent.
        """
        tx = self._require_tx("complete")
        self._set_tx(TxState.IDLE)
        data = self._responses.response_data(tx, outcome, now)
        self._tx = None
        self._cancel_complete_at = None
        self._cancelled = False
        self._signature_request_id = None
        sent = False
        if send and self.connected and self.state.secrets is not None:
            self._send(tx.response_event, data, now, message_id=tx.message_id)
            sent = True
        record = TransactionRecord(
            pos_ref_id=tx.pos_ref_id,
            request_event=tx.event,
            response_event=tx.response_event,
            request_id=tx.message_id,
            success=bool(data.get("success")),
            data=data,
            finished_at=now,
            sent=sent,
        )
        if tx.event not in ("reverse_transaction", "settle", "settlement_enquiry"):
            # A reversal names the transaction it reverses; recording it under that
            # pos_ref_id would hide the original from get_transaction (§7.15).
            self.state.remember(record)
        self._changed()
        self._event(TransactionFinished(record=record))

    # ------------------------------------------------------------------ internals: sending

    def _active_secrets(self) -> Secrets | None:
        if self._pending_secrets is not None:
            return self._pending_secrets
        return self.state.secrets

    def _next_id(self) -> str:
        msg_id = f"{self._conn_id or self._conn_prefix + '0'}.{self._seq}"
        self._seq += 1
        return msg_id

    def _message(
        self, event: str, data: JsonObject | None, now: float, message_id: str | None = None
    ) -> Message:
        return Message(
            id=message_id if message_id is not None else self._next_id(),
            event=event,
            data=data,
            datetime=format_local_datetime(now),
            conn_id=self._conn_id,
        )

    def _encode(self, message: Message, secrets: Secrets | None) -> str:
        return encode_frame(
            terminal_inner_json(message), secrets=secrets, upper_enc=self._upper_enc
        )

    def _send(
        self,
        event: str,
        data: JsonObject | None,
        now: float,
        *,
        message_id: str | None = None,
        secrets: Secrets | None = None,
        plain: bool = False,
    ) -> str:
        """Queue one message, encrypted under the active keys unless ``plain``; returns its id."""
        message = self._message(event, data, now, message_id)
        if not self.connected:
            return message.id
        keys = None if plain else (secrets if secrets is not None else self._active_secrets())
        self._outgoing.append(self._encode(message, keys))
        self.counters.frames_out += 1
        if self._trace:
            self._event(MessageOut(message=message, encrypted=keys is not None))
        return message.id

    def _send_if_linked(self, event: str, data: JsonObject, now: float) -> str | None:
        if self.connected and self.state.secrets is not None:
            return self._send(event, data, now)
        return None

    def _reply(self, request: Message, event: str, data: JsonObject | None, now: float) -> None:
        self._send(event, data, now, message_id=request.id)

    def _event(self, event: TerminalEvent) -> None:
        self._events.append(event)

    def _changed(self) -> None:
        self.state_version += 1

    def _reject(self, reason: str, detail: str) -> None:
        self.counters.frames_rejected += 1
        self._event(FrameRejected(reason=reason, detail=detail))

    def _unexpected(self, message: Message, reason: str) -> None:
        self._event(UnexpectedMessage(event=message.event, message_id=message.id, reason=reason))

    def _require_connected(self, what: str) -> None:
        if not self.connected:
            raise LocalProtocolError(f"{what}: no POS is connected")

    def _require_paired_link(self, what: str) -> None:
        self._require_connected(what)
        if self._pairing is not PairingState.PAIRED:
            raise LocalProtocolError(f"{what}: not paired")

    def _require_tx(self, what: str) -> TransactionRequest:
        if self._tx is None:
            raise LocalProtocolError(f"{what}: no transaction in progress")
        return self._tx

    def _set_pairing(self, new: PairingState) -> None:
        self._pairing = _move(_PAIRING_TRANSITIONS, self._pairing, new, "pairing")

    def _set_tx(self, new: TxState) -> None:
        self._tx_state = _move(_TX_TRANSITIONS, self._tx_state, new, "transaction")

    def _check_pos_ids(self, got: Received) -> None:
        inner = got.message.pos_id
        outer = got.outer_pos_id
        if inner is not None and outer is not None and inner != outer:
            self._event(PosIdMismatch(expected=outer, received=inner, where="inner/outer"))
        seen = inner if inner is not None else outer
        if (
            seen is not None
            and self._pairing is PairingState.PAIRED
            and self.state.pos_id is not None
            and seen != self.state.pos_id
        ):
            self._event(PosIdMismatch(expected=self.state.pos_id, received=seen, where="message"))

    # ------------------------------------------------------------------ internals: timers

    def _schedule_ping(self, now: float) -> None:
        interval = self.options.ping_interval
        if interval is not None and self.connected and self._pairing is PairingState.PAIRED:
            self._next_ping_at = now + interval
        else:
            self._next_ping_at = None

    def _send_ping(self, now: float) -> None:
        if not self.connected or self._pairing is not PairingState.PAIRED:
            self._next_ping_at = None
            return
        self._last_ping_id = self._send("ping", None, now)
        self._pong_due_at = now + self.options.pong_timeout
        self._schedule_ping(now)

    def _send_pong(self, ping_id: str, now: float) -> None:
        if not self.connected:
            return
        self._send("pong", None, now, message_id=ping_id)
        if not self._pong_sent:
            self._pong_sent = True
            token = self.options.pos_spi_token
            if token is not None and self._pairing is PairingState.PAIRED:
                self._send("provision_pos_spi_token", {"pos_spi_auth_token": token}, now)

    # ------------------------------------------------------------------ internals: receiving

    def _try_rolled_keys(
        self, text: str | bytes, first: RejectedFrame, now: float
    ) -> RejectedFrame | None:
        """During a rollover only ``response_use_next_keys`` may come under the next keys."""
        assert self._roll is not None
        if first.reason is not RejectReason.INVALID_SIGNATURE:
            return first
        request_id, next_keys = self._roll
        got = decode_frame(text, next_keys)
        if isinstance(got, RejectedFrame) or got.message.event != "response_use_next_keys":
            return first
        if self._trace:
            self._event(MessageIn(message=got.message, encrypted=True))
        if got.message.id != request_id:
            self._unexpected(got.message, "reply to another key rollover request")
            return None
        self._roll = None
        self.state.secrets = next_keys
        self._changed()
        self._event(KeysRolled(fingerprint=next_keys.fingerprint()))
        return None

    def _on_plain(self, message: Message, now: float) -> None:
        if self._pairing is PairingState.PAIRED:
            # §2.2 and docs/security.md: a paired terminal obeys no plaintext,
            # not even pair_request (anyone on the network could otherwise
            # unpair it). Unpairing is drop_keys under the keys, or the
            # terminal's own unpair.
            self._reject("plain_after_pairing", f"plain {message.event[:40]!r} from a paired POS")
            return
        if message.event == "pair_request":
            self._on_pair_request(message, now)
        elif message.event == "key_response":
            self._on_key_response(message, now)
        elif self._active_secrets() is not None:
            # §2.2: every message after key_response travels encrypted.
            self._reject("plain_after_pairing", f"plain {message.event!r} from a paired POS")
        else:
            self._unexpected(message, "not paired")

    def _on_pair_request(self, message: Message, now: float) -> None:
        pos_id = message.pos_id or self.query_pos_id or ""
        if self._tx is not None:
            self._unexpected(message, "pair_request during a transaction")
            return
        if self._pairing is PairingState.PAIRED:
            self._forget_keys()
            self._event(Unpaired(by="pos"))
        self._clear_pairing()
        self._set_pairing(PairingState.AWAITING_KEY_RESPONSE)
        enc_private, hmac_private = generate_private_key(), generate_private_key()
        data = {
            "enc": {"A": format(dh_public_key(enc_private), "X")},
            "hmac": {"A": format(dh_public_key(hmac_private), "X")},
        }
        message_id = self._send("key_request", data, now, plain=True)
        self._exchange = _KeyExchange(
            message_id=message_id, pos_id=pos_id, enc_private=enc_private, hmac_private=hmac_private
        )
        self._event(PairingRequested(pos_id=pos_id))

    def _on_key_response(self, message: Message, now: float) -> None:
        exchange = self._exchange
        if self._pairing is not PairingState.AWAITING_KEY_RESPONSE or exchange is None:
            self._unexpected(message, "no key_request is outstanding")
            return
        if message.id != exchange.message_id:
            self._unexpected(message, "key_response id differs from the key_request id")
            return
        enc, hmac_part = message.get("enc"), message.get("hmac")
        try:
            b_enc = parse_public_key(enc.get("B") if isinstance(enc, dict) else None)
            b_hmac = parse_public_key(hmac_part.get("B") if isinstance(hmac_part, dict) else None)
        except CryptoError as exc:
            self._abandon_pairing(f"bad key_response: {exc}")
            return
        secrets = Secrets(
            enc_key=dh_secret_to_key(dh_shared_secret(b_enc, exchange.enc_private)),
            hmac_key=dh_secret_to_key(dh_shared_secret(b_hmac, exchange.hmac_private)),
        )
        self._exchange = None
        self._pending_secrets = secrets
        self._pending_pos_id = message.pos_id or exchange.pos_id
        self._set_pairing(PairingState.AWAITING_CONFIRMATION)
        key_check = self._message("key_check", None, now)
        frame = self._encode(key_check, secrets)
        self._outgoing.append(frame)
        self.counters.frames_out += 1
        if self._trace:
            self._event(MessageOut(message=key_check, encrypted=True))
        self._code = confirmation_code(str(orjson.loads(frame)["hmac"]))
        self._event(PairingCodeReady(confirmation_code=self._code, pos_id=self._pending_pos_id))

    def _clear_pairing(self) -> None:
        self._exchange = None
        self._pending_secrets = None
        self._pending_pos_id = None
        self._code = None

    def _abandon_pairing(self, reason: str) -> None:
        self._clear_pairing()
        self._set_pairing(PairingState.UNPAIRED)
        self._event(PairingFailed(reason=reason))

    def _forget_keys(self) -> None:
        self._set_pairing(PairingState.UNPAIRED)
        self.state.secrets = None
        self.state.pos_id = None
        self._roll = None
        self._next_ping_at = None
        self._pong_due_at = None
        self._changed()

    def _on_drop_keys(self, message: Message, now: float) -> None:
        if self._pairing is PairingState.PAIRED:
            self._forget_keys()
            self._event(Unpaired(by="pos"))
        elif self._pairing is PairingState.AWAITING_CONFIRMATION:
            self._abandon_pairing("cancelled by the POS")
        else:
            self._unexpected(message, "not paired")

    def _on_ping(self, message: Message, now: float) -> None:
        if not self.options.answer_pings:
            return
        if self.options.pong_delay > 0:
            self._delayed_pongs.append((now + self.options.pong_delay, message.id))
        else:
            self._send_pong(message.id, now)

    def _on_pong(self, message: Message, now: float) -> None:
        if self._last_ping_id is not None and message.id == self._last_ping_id:
            self._missed_pongs = 0
            self._pong_due_at = None
        else:
            self._unexpected(message, "pong does not answer the last ping")

    def _on_response_use_next_keys(self, message: Message, now: float) -> None:
        # A reply that verified under the *current* keys: the POS did not roll.
        self._unexpected(message, "response_use_next_keys under the current keys")

    # -- transactions ------------------------------------------------------

    def _parse_request(self, message: Message, now: float) -> TransactionRequest:
        spec = _TX_SPECS[message.event]
        data = message.data if message.data is not None else {}
        pos_ref_id = _as_str(data.get("pos_ref_id"))
        amount = _as_int(data.get(spec.amount_field)) if spec.amount_field else None
        return TransactionRequest(
            event=message.event,
            message_id=message.id,
            pos_ref_id=pos_ref_id,
            response_event=spec.response_event,
            transaction_type=spec.transaction_type,
            amount_cents=amount or 0,
            tip_amount=_as_int(data.get("tip_amount")) or 0,
            cash_amount=_as_int(data.get("cash_amount")) or 0,
            surcharge_amount=_as_int(data.get("surcharge_amount")) or 0,
            preauth_id=_as_str(data.get("preauth_id")),
            data=data,
            received_at=now,
        )

    def _on_transaction_request(self, message: Message, now: float) -> None:
        tx = self._parse_request(message, now)
        spec = _TX_SPECS[message.event]
        refusal: tuple[str, str] | None = None
        if self._tx is not None:
            refusal = ("OPERATION_IN_PROGRESS", BUSY_DETAIL)
        elif spec.needs_pos_ref_id and not tx.pos_ref_id:
            refusal = ("MISSING_ARGUMENTS", "PosRefId is missing")
        if refusal is not None:
            reason, detail = refusal
            data: JsonObject = {"success": False, "error_reason": reason, "error_detail": detail}
            if tx.pos_ref_id is not None:
                data = {"pos_ref_id": tx.pos_ref_id, **data}
            self._reply(message, spec.response_event, data, now)
            self._event(TransactionRefused(tx=tx, error_reason=reason))
            return
        self._tx = tx
        self._set_tx(TxState.CARD_PENDING)
        self._event(TransactionRequested(tx=tx))

    def _on_cancel(self, message: Message, now: float) -> None:
        tx = self._tx
        if not self.options.answer_cancel:
            self._event(
                CancelRequested(pos_ref_id=None if tx is None else tx.pos_ref_id, accepted=False)
            )
            return
        if tx is None:
            self._reply(
                message,
                "error",
                {
                    "success": False,
                    "error_reason": "NO_TRANSACTION",
                    "error_detail": "There is no transaction to cancel",
                },
                now,
            )
            self._event(CancelRequested(pos_ref_id=None, accepted=False))
            return
        if self._tx_state in _CANCELLABLE or self._cancelled:
            self._reply(
                message, "cancel_response", {"success": True, "pos_ref_id": tx.pos_ref_id}, now
            )
            self._event(CancelRequested(pos_ref_id=tx.pos_ref_id, accepted=True))
            if not self._cancelled:
                self._cancelled = True
                delay = self.options.cancel_completion_delay
                if delay is not None and delay <= 0:
                    self.complete_transaction(Outcome.cancelled(), now)
                elif delay is not None:
                    self._cancel_complete_at = now + delay
            return
        self._reply(
            message,
            "cancel_response",
            {
                "success": False,
                "pos_ref_id": tx.pos_ref_id,
                "error_reason": "TXN_PAST_POINT_OF_NO_RETURN",
                "error_detail": "Txn has passed the point of no return",
            },
            now,
        )
        self._event(CancelRequested(pos_ref_id=tx.pos_ref_id, accepted=False))

    def _on_signature(self, message: Message, now: float) -> None:
        tx = self._tx
        if tx is None or self._tx_state is not TxState.AWAITING_SIGNATURE:
            self._unexpected(message, "no signature is awaited")
            return
        # §7.7: JS sends {pos_ref_id}; Java reuses the signature_required id, no data.
        ref = _as_str(message.get("pos_ref_id"))
        if ref is not None and ref != tx.pos_ref_id and message.id != self._signature_request_id:
            self._unexpected(message, "signature answer for another pos_ref_id")
            return
        self._set_tx(TxState.PROCESSING)
        accepted = message.event == "signature_accept"
        self._event(SignatureDecided(accepted=accepted, pos_ref_id=tx.pos_ref_id))

    def _on_auth_code(self, message: Message, now: float) -> None:
        tx = self._tx
        if tx is None or self._tx_state is not TxState.AWAITING_AUTH_CODE:
            self._unexpected(message, "no authorisation code is awaited")
            return
        ref = _as_str(message.get("pos_ref_id"))
        code = _as_str(message.get("auth_code"))
        if ref is not None and ref != tx.pos_ref_id:
            self._unexpected(message, "authorisation code for another pos_ref_id")
            return
        if not code:
            self._unexpected(message, "authorisation_code_advice without auth_code")
            return
        self._set_tx(TxState.PROCESSING)
        self._event(AuthCodeReceived(code=code, pos_ref_id=tx.pos_ref_id))

    def _in_progress_reason(self, prefix: str) -> str:
        if self._tx_state is TxState.AWAITING_SIGNATURE:
            return f"{prefix}_AWAITING_SIGNATURE"
        if self._tx_state is TxState.AWAITING_AUTH_CODE:
            return f"{prefix}_AWAITING_PHONE_AUTH_CODE"
        return prefix

    def _on_get_transaction(self, message: Message, now: float) -> None:
        raw = message.get("pos_ref_id")
        reply: JsonObject
        if self.options.get_transaction_error is not None:
            reply = self._gt_failure(raw, self.options.get_transaction_error, "Simulated failure")
        elif raw is None:
            reply = self._gt_failure(None, "MISSING_ARGUMENTS", "PosRefId is missing")
        elif not isinstance(raw, str) or not raw.strip() or not raw.isprintable():
            reply = self._gt_failure(raw, "INVALID_ARGUMENTS", "PosRefId is invalid")
        elif self._tx is not None and self._tx.pos_ref_id == raw:
            reply = self._gt_failure(
                raw, self._in_progress_reason("TRANSACTION_IN_PROGRESS"), BUSY_DETAIL
            )
        elif self._tx is not None:
            reply = self._gt_failure(raw, "OPERATION_IN_PROGRESS", BUSY_DETAIL)
        else:
            record = self.state.find(raw)
            if record is None:
                reply = self._gt_failure(raw, "POS_REF_ID_NOT_FOUND", "PosRefId not found")
            else:
                reply = {"success": True, "pos_ref_id": raw, "tx": record.data}
        self._reply(message, "get_transaction_response", reply, now)

    @staticmethod
    def _gt_failure(pos_ref_id: object, reason: str, detail: str) -> JsonObject:
        data: JsonObject = {"success": False, "error_reason": reason, "error_detail": detail}
        if isinstance(pos_ref_id, str):
            data["pos_ref_id"] = pos_ref_id
        return data

    def _on_get_last_transaction(self, message: Message, now: float) -> None:
        reply: JsonObject
        if self._tx is not None:
            reply = {
                "success": False,
                "error_reason": self._in_progress_reason("OPERATION_IN_PROGRESS"),
                "error_detail": BUSY_DETAIL,
            }
            if self._tx.pos_ref_id is not None:
                reply["pos_ref_id"] = self._tx.pos_ref_id
        elif self.state.last_tx is None:
            reply = {
                "success": False,
                "error_reason": "NO_TRANSACTION",
                "error_detail": _NO_TX_DETAIL,
            }
        else:
            reply = dict(self.state.last_tx.data)
        self._reply(message, "last_transaction", reply, now)

    def _on_terminal_status(self, message: Message, now: float) -> None:
        data = {
            "success": True,
            "status": "IDLE" if self._tx is None else "BUSY",
            "battery_level": str(self.options.battery_level),
            "charging": self.options.charging,
        }
        self._reply(message, "terminal_status", data, now)

    def _on_terminal_configuration(self, message: Message, now: float) -> None:
        data = {
            "success": True,
            "comms_selected": "WIFI",
            "merchant_id": self.profile.merchant_id,
            "pa_version": "SIM-PA-1.0",
            "payment_interface_version": "SIM-PI-1.0",
            "plugin_version": "SIM-PL-1.0",
            "serial_number": self.state.serial_number,
            "terminal_id": self.profile.terminal_id,
            "terminal_model": self.options.terminal_model,
        }
        self._reply(message, "terminal_configuration", data, now)

    def _on_set_pos_info(self, message: Message, now: float) -> None:
        self._reply(message, "set_pos_info_response", {"success": True}, now)
        self._event(PosInfoReceived(data=message.data if message.data is not None else {}))

    def _on_print(self, message: Message, now: float) -> None:
        data: JsonObject = {"success": True}
        if not self.has_printer:
            data = {
                "success": False,
                "error_reason": "PRINTER_NOT_AVAILABLE",
                "error_detail": f"Terminal model {self.options.terminal_model} has no printer",
            }
        self._reply(message, "print_response", data, now)
        self._event(
            PrintRequested(key=_as_str(message.get("key")), payload=_as_str(message.get("payload")))
        )

    def _on_ignored(self, message: Message, now: float) -> None:
        # Pay-at-table answers and acks (§7.23): this terminal never asks for them.
        self._unexpected(message, "not expected by this terminal")

    _HANDLERS: ClassVar[dict[str, Callable[[Terminal, Message, float], None]]] = {
        "drop_keys": _on_drop_keys,
        "ping": _on_ping,
        "pong": _on_pong,
        "response_use_next_keys": _on_response_use_next_keys,
        "cancel_transaction": _on_cancel,
        "signature_accept": _on_signature,
        "signature_decline": _on_signature,
        "authorisation_code_advice": _on_auth_code,
        "get_transaction": _on_get_transaction,
        "get_last_transaction": _on_get_last_transaction,
        "get_terminal_status": _on_terminal_status,
        "get_terminal_configuration": _on_terminal_configuration,
        "set_pos_info": _on_set_pos_info,
        "print": _on_print,
        "set_table_config": _on_ignored,
        "bill_details": _on_ignored,
        "open_tables": _on_ignored,
        "bill_payment_flow_ended_ack": _on_ignored,
    }


class _Responses:
    """Builds the response data a real terminal sends (§7.1, §7.14-7.17), fixtures as templates.

    Kept apart from :class:`Terminal`: the session decides *when* to answer,
    this decides *what* the answer says, and keeps the bank-side state
    (STANs, preauth balances, the settlement batch) in :class:`TerminalState`.
    """

    def __init__(
        self, state: TerminalState, profile: TerminalProfile, options: TerminalOptions
    ) -> None:
        self.state = state
        self.profile = profile
        self.options = options

    @property
    def has_printer(self) -> bool:
        return self.options.terminal_model.upper() not in PRINTERLESS_MODELS

    def _next_sequence(self) -> int:
        self.state.sequence += 1
        return self.state.sequence

    def _receipt(self, tx: TransactionRequest, outcome: Outcome, amount: int, copy: str) -> str:
        options = tx.data
        header = _as_str(options.get(f"{copy}_receipt_header")) or ""
        footer = _as_str(options.get(f"{copy}_receipt_footer")) or ""
        lines = [
            *([header] if header else []),
            self.profile.merchant_acquirer,
            self.profile.merchant_name,
            "",
            f"{tx.transaction_type:<12}{_money(amount):>9}",
            "",
            f"   ({outcome.host_response_code}) {outcome.host_response_text}",
            "",
            *(["Partial Approval", ""] if outcome.partial_amount is not None else []),
            f"  *{copy.upper()} COPY*",
            *([footer] if footer else []),
            "",
        ]
        return "\r\n".join(lines)

    def signature_receipt(self, tx: TransactionRequest) -> str:
        lines = [
            self.profile.merchant_acquirer,
            self.profile.merchant_name,
            "",
            f"{tx.transaction_type:<12}{_money(tx.amount_cents):>9}",
            "",
            "SIGNATURE:",
            "",
            "________________________",
            "",
        ]
        return "\r\n".join(lines)

    def _card_fields(self, tx: TransactionRequest, outcome: Outcome, now: float) -> JsonObject:
        moment = _dt.datetime.fromtimestamp(now, tz=_dt.UTC)
        seq = self._next_sequence()
        stan = f"{seq % 1_000_000:06d}"
        moto = tx.event == "moto_purchase"
        approved = outcome.approved
        auth = outcome.auth_code or (f"{(seq * 7919) % 1_000_000:06d}" if approved else "")
        fields: JsonObject = {
            "account_type": self.profile.account_type,
            "auth_code": auth,
            "bank_date": moment.strftime("%d%m%Y"),
            "bank_settlement_date": moment.strftime("%d%m%Y"),
            "bank_time": moment.strftime("%H%M%S"),
            "card_entry": "MANUAL_PHONE" if moto else "EMV_CTLS",
            "currency": "AUD",
            "emv_actioncode": "TC" if approved else "AAC",
            "emv_actioncode_values": f"{(seq * 2654435761) % (1 << 64):016X}",
            "emv_pix": "1010",
            "emv_rid": "A000000003",
            "emv_tsi": "E800",
            "emv_tvr": "0000000000",
            "expiry_date": self.profile.expiry_date,
            "host_response_code": outcome.host_response_code,
            "host_response_text": outcome.host_response_text,
            "informative_text": "                ",
            "masked_pan": self.profile.masked_pan,
            "merchant_acquirer": self.profile.merchant_acquirer,
            "merchant_addr": self.profile.merchant_addr,
            "merchant_city": self.profile.merchant_city,
            "merchant_country": self.profile.merchant_country,
            "merchant_id": self.profile.merchant_id,
            "merchant_name": self.profile.merchant_name,
            "merchant_postcode": self.profile.merchant_postcode,
            "online_indicator": "Y",
            "rrn": moment.strftime("%y%m%d") + stan,
            "scheme_app_name": self.profile.scheme_name,
            "scheme_name": self.profile.scheme_name,
            "stan": stan,
            "terminal_id": self.profile.terminal_id,
            "terminal_ref_id": f"{self.profile.merchant_id}_{moment:%Y%m%d%H%M%S}{stan}",
            "transaction_type": tx.transaction_type,
        }
        return fields

    def response_data(self, tx: TransactionRequest, outcome: Outcome, now: float) -> JsonObject:
        if tx.event in ("settle", "settlement_enquiry"):
            return self._settlement_data(tx, outcome, now)
        if tx.event == "reverse_transaction":
            return self._reversal_data(tx, outcome)
        failure = self._preauth_check(tx) if outcome.approved else None
        if failure is not None:
            reason, detail = failure
            outcome = Outcome(
                approved=False,
                host_response_code="12",
                host_response_text="INVALID TRANSACTION",
                error_reason=reason,
                error_detail=detail,
            )
        amount = tx.amount_cents
        if outcome.approved and outcome.partial_amount is not None:
            amount = outcome.partial_amount
        data: JsonObject = {"success": outcome.approved, "pos_ref_id": tx.pos_ref_id}
        data.update(self._card_fields(tx, outcome, now))
        printed = self.has_printer and _as_bool(tx.data.get("print_merchant_copy"))
        data["customer_receipt"] = self._receipt(tx, outcome, amount, "customer")
        data["customer_receipt_printed"] = False
        data["merchant_receipt"] = self._receipt(tx, outcome, amount, "merchant")
        data["merchant_receipt_printed"] = printed
        data.update(self._amount_fields(tx, amount, outcome.approved))
        if tx.event in ("purchase_zip", "refund_zip"):
            data["host_response_text"] = (
                "TRANS APPROVED" if outcome.approved else (outcome.host_response_text)
            )
            zip_data: JsonObject = {
                "location_id": "1234",
                "receipt_number": f"{self.state.sequence:06d}",
            }
            sent_zip = tx.data.get("zip_data")
            if isinstance(sent_zip, dict):
                zip_data.update({k: v for k, v in sent_zip.items() if isinstance(v, str)})
            data["zip_data"] = zip_data
        if not outcome.approved:
            data["error_reason"] = outcome.error_reason or "HOST_DECLINED"
            data["error_detail"] = outcome.error_detail or _HOST_DETAIL
        if outcome.approved:
            self._apply_to_batch(tx, amount)
        return data

    def _amount_fields(self, tx: TransactionRequest, amount: int, approved: bool) -> JsonObject:
        event = tx.event
        if event in ("purchase", "purchase_zip"):
            # The simulated customer declines any cashout prompt.
            cash = tx.cash_amount
            return {
                "purchase_amount": amount,
                "tip_amount": tx.tip_amount,
                "surcharge_amount": tx.surcharge_amount,
                "cash_amount": cash,
                "bank_noncash_amount": amount + tx.tip_amount + tx.surcharge_amount,
                "bank_cash_amount": cash,
            }
        if event in ("refund", "refund_zip"):
            return {"refund_amount": amount, "bank_noncash_amount": amount}
        if event == "cash":
            return {
                "cash_amount": amount,
                "surcharge_amount": tx.surcharge_amount,
                "bank_cash_amount": amount,
                "bank_noncash_amount": tx.surcharge_amount,
            }
        if event == "moto_purchase":
            return {
                "purchase_amount": amount,
                "surcharge_amount": tx.surcharge_amount,
                "bank_noncash_amount": amount + tx.surcharge_amount,
            }
        if event == "account_verify":
            return {}
        return self._preauth_fields(tx, amount, approved)

    def _preauth_check(self, tx: TransactionRequest) -> tuple[str, str] | None:
        if tx.event not in _PREAUTH_EVENTS:
            return None
        pid = tx.preauth_id
        if not pid:
            return ("MISSING_ARGUMENTS", "Pre Auth ID is missing")
        found = self.state.preauths.get(pid)
        if found is None:
            return ("PRE_AUTH_ID_NOT_FOUND", f"Pre Auth ID {pid} was not found")
        if not found.open:
            return (
                "PRE_AUTH_ID_ALREADY_COMPLETED",
                f"Pre Auth ID {pid} has already been completed",
            )
        if tx.event == "preauth_partial_cancellation" and tx.amount_cents > found.balance:
            return ("INVALID_ARGUMENTS", f"Cancel amount exceeds the balance of Pre Auth ID {pid}")
        return None

    def _preauth_fields(self, tx: TransactionRequest, amount: int, approved: bool) -> JsonObject:
        event = tx.event
        if event == "preauth":
            if not approved:
                return {"preauth_amount": amount}
            pid = f"{15765000 + self._next_sequence()}"
            self.state.preauths[pid] = PreauthBalance(balance=amount)
            return {"preauth_id": pid, "preauth_amount": amount}
        pid = tx.preauth_id or ""
        found = self.state.preauths.get(pid)
        before = found.balance if found is not None else 0
        fields: JsonObject = {"preauth_id": pid}
        after = before
        if event == "preauth_topup":
            after = before + amount
            fields.update(topup_amount=amount, existing_preauth_amount=before, balance_amount=after)
        elif event == "preauth_partial_cancellation":
            after = before - amount
            fields.update(
                preauth_cancel_amount=amount, existing_preauth_amount=before, balance_amount=after
            )
        elif event == "preauth_extend":
            fields.update(existing_preauth_amount=before, balance_amount=before)
        elif event == "preauth_cancellation":
            after = 0
            fields.update(preauth_amount=before)
        elif event == "completion":
            after = 0
            fields.update(
                completion_amount=amount,
                surcharge_amount=tx.surcharge_amount,
                bank_noncash_amount=amount + tx.surcharge_amount,
            )
        if approved and found is not None:
            found.balance = after
            if event in ("preauth_cancellation", "completion"):
                found.open = False
        return fields

    def _apply_to_batch(self, tx: TransactionRequest, amount: int) -> None:
        batch = self.state.batch
        if tx.event in ("purchase", "moto_purchase", "completion", "purchase_zip"):
            batch.purchase_count += 1
            batch.purchase_value += amount + tx.tip_amount + tx.surcharge_amount
        elif tx.event in ("refund", "refund_zip"):
            batch.refund_count += 1
            batch.refund_value -= amount
        elif tx.event == "cash":
            batch.cash_count += 1
            batch.cash_value += amount

    def _reversal_data(self, tx: TransactionRequest, outcome: Outcome) -> JsonObject:
        original = self.state.find(tx.pos_ref_id) if tx.pos_ref_id else None
        if outcome.approved and original is not None and original.success:
            return {"pos_ref_id": tx.pos_ref_id, "success": True}
        return {
            "pos_ref_id": tx.pos_ref_id,
            "success": False,
            "error_reason": outcome.error_reason or "INTERNAL_ERROR",
            "error_detail": "This transaction could not be reversed",
        }

    def _settlement_data(self, tx: TransactionRequest, outcome: Outcome, now: float) -> JsonObject:
        moment = _dt.datetime.fromtimestamp(now, tz=_dt.UTC)
        batch = self.state.batch
        settle = tx.event == "settle"
        total_count = batch.purchase_count + batch.refund_count + batch.cash_count
        total_value = batch.purchase_value + batch.refund_value + batch.cash_value
        schemes: list[JsonObject] = []
        for name in _SETTLE_SCHEMES:
            scheme: JsonObject = {
                "scheme_name": name,
                "settle_by_acquirer": "Yes" if name in ("Debit", "MasterCard", "Visa") else "No",
                "total_count": "0",
                "total_value": "0",
            }
            if name == self.profile.scheme_name:
                scheme.update(
                    total_count=str(total_count),
                    total_value=str(total_value),
                    total_purchase_count=str(batch.purchase_count),
                    total_purchase_value=str(batch.purchase_value),
                    total_refund_count=str(batch.refund_count),
                    total_refund_value=str(batch.refund_value),
                    total_cash_count=str(batch.cash_count),
                    total_cash_value=str(batch.cash_value),
                )
            schemes.append(scheme)
        if outcome.approved:
            code, text = ("941", "CUTOVER COMPLETE") if settle else ("000", "APPROVED")
        else:
            code, text = outcome.host_response_code, outcome.host_response_text
        title = "SETTLEMENT CUTOVER" if settle else "SETTLEMENT INQUIRY"
        receipt = "\r\n".join(
            [
                self.profile.merchant_acquirer,
                self.profile.merchant_name,
                "",
                f" {title}",
                "",
                f"TOTAL   {total_count:<6}{_money(total_value)}",
                "",
                f" ({code}) {text}",
                "",
            ]
        )
        day = moment.strftime("%d%b%y")
        data: JsonObject = {
            "success": outcome.approved,
            "accumulated_purchase_count": str(batch.purchase_count),
            "accumulated_purchase_value": str(batch.purchase_value),
            "accumulated_refund_count": str(batch.refund_count),
            "accumulated_refund_value": str(batch.refund_value),
            "accumulated_cash_count": str(batch.cash_count),
            "accumulated_cash_value": str(batch.cash_value),
            "accumulated_settle_by_acquirer_count": str(total_count),
            "accumulated_settle_by_acquirer_value": str(total_value),
            "accumulated_total_count": str(total_count),
            "accumulated_total_value": str(total_value),
            "bank_date": moment.strftime("%d%m%Y"),
            "bank_time": moment.strftime("%H%M%S"),
            "host_response_code": code,
            "host_response_text": text,
            "merchant_acquirer": self.profile.merchant_acquirer,
            "merchant_address": self.profile.merchant_addr,
            "merchant_city": self.profile.merchant_city,
            "merchant_country": self.profile.merchant_country,
            "merchant_name": self.profile.merchant_name,
            "merchant_postcode": self.profile.merchant_postcode,
            "merchant_receipt": receipt,
            "merchant_receipt_printed": self.has_printer
            and _as_bool(tx.data.get("print_merchant_copy")),
            "schemes": schemes,
            "settlement_period_end_date": day,
            "settlement_period_end_time": moment.strftime("%H:%M"),
            "settlement_period_start_date": day,
            "settlement_period_start_time": "00:00",
            "settlement_triggered_date": day,
            "settlement_triggered_time": moment.strftime("%H:%M:%S"),
            "stan": f"{self._next_sequence() % 1_000_000:06d}",
            "terminal_id": self.profile.terminal_id,
            "transaction_range": "000000-000000",
        }
        if not outcome.approved:
            data["error_reason"] = outcome.error_reason or "HOST_DECLINED"
            data["error_detail"] = outcome.error_detail or _HOST_DETAIL
        elif settle:
            self.state.batch = SettlementBatch()
        return data
