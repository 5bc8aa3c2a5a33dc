"""What a terminal keeps and how it is set up: its persisted state, profile, options, counters.

:class:`TerminalState` is what survives a restart: the pairing keys, the
finished transactions ``get_transaction`` answers from (§7.10, §7.11), and the
bank-side memory (STAN sequence, preauth balances, the settlement batch). It
round-trips through JSON, secrets included: it is the terminal's own storage,
so the file must be protected by whoever writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from multipair.spi.crypto import Secrets
from multipair.spi.envelope import JsonObject

__all__ = [
    "HISTORY_LIMIT",
    "PreauthBalance",
    "SettlementBatch",
    "TerminalCounters",
    "TerminalOptions",
    "TerminalProfile",
    "TerminalState",
    "TransactionRecord",
]

HISTORY_LIMIT: Final = 20
"""Finished transactions kept for ``get_transaction`` (§7.10 asks for at least 10)."""


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
