"""Events a lane publishes on its events stream (docs/broker-schema.md, "Events").

Rules this module keeps:

- One frozen, slotted, keyword-only dataclass per event ``type``. Every event
  has ``instance_id``, ``at`` (UTC, millisecond precision, as it travels) and
  the ``command_id`` it answers, where there is one.
- The schema grows only by fields with defaults, so readers ignore fields they
  do not know (unlike commands, where an unknown field is refused) and an old
  reader keeps working against a newer lane.
- Building an event checks field types, not values: values such as
  ``status`` are documented vocabularies (the ``StrEnum`` classes below) that
  may grow; a reader must tolerate a value it does not know.
- No event carries a secret (keys, SPI tokens) or full card data: terminal
  fields are the ones PROTOCOL.md §7.1 lists for display and bookkeeping
  (``masked_pan``, never an expiry date).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, TypeVar

from multipair.broker_schema._fields import (
    FieldSpec,
    JsonObject,
    check_kind,
    field_specs,
    truncate_to_ms,
)
from multipair.broker_schema.keys import validate_instance_id
from multipair.exceptions import InternalError

# The protocol owns these words (PROTOCOL.md §7.1, §8.1, §8.2); the contract
# publishes them under its own names: Status is a lane's connection status,
# Flow what it is busy with, TxResult a transaction's outcome.
from multipair.spi.states import Outcome as TxResult
from multipair.spi.states import SpiFlow as Flow
from multipair.spi.states import SpiStatus as Status

__all__ = [
    "EVENT_TYPES",
    "AuthCodeRequired",
    "Battery",
    "BillFlowEnded",
    "BillPaymentReported",
    "BillRequestExpired",
    "BillRequested",
    "CommandAccepted",
    "CommandRejected",
    "Error",
    "Event",
    "Flow",
    "LaneCrashed",
    "LaneStarted",
    "LaneStopped",
    "OpenTablesRequested",
    "Pairing",
    "PairingState",
    "Printing",
    "Settlement",
    "SignatureRequired",
    "Status",
    "StatusChanged",
    "TerminalConfigurationReport",
    "TerminalStatusReport",
    "TransactionCompleted",
    "TransactionLookup",
    "TransactionUpdate",
    "TxResult",
]


class PairingState(StrEnum):
    """Steps of pairing (PROTOCOL.md §4.4) as the ``pairing`` event reports them."""

    STARTED = "started"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    """The confirmation code is shown; see ``awaiting_pos`` / ``awaiting_terminal``."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# --- the base class and the registry ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event has. Use a subclass; ``type`` names it on the wire."""

    type: ClassVar[str]
    """The event's ``type`` on the wire."""
    wire_fields: ClassVar[tuple[FieldSpec, ...]] = ()
    """The fields on the wire, filled in when the class is registered."""

    instance_id: str
    """The lane (canonical lower-case UUID)."""
    at: _dt.datetime
    """When it happened (aware; kept in UTC to the millisecond, as it travels)."""
    command_id: str | None = None
    """The command this event answers, if any."""

    def __post_init__(self) -> None:
        for spec in type(self).wire_fields:
            check_kind(spec, getattr(self, spec.name))
        object.__setattr__(self, "instance_id", validate_instance_id(self.instance_id))
        object.__setattr__(self, "at", truncate_to_ms(self.at))


EVENT_TYPES: Final[dict[str, type[Event]]] = {}
"""Every event class by its wire ``type``."""

_E = TypeVar("_E", bound=type[Event])


def _register(cls: _E) -> _E:
    cls.wire_fields = field_specs(cls)
    if cls.type in EVENT_TYPES:
        raise InternalError(f"two events with type {cls.type!r}")
    EVENT_TYPES[cls.type] = cls
    return cls


# --- commands ---------------------------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAccepted(Event):
    """The command is valid and will run (a transaction: in its turn, in stream order)."""

    type: ClassVar[str] = "command_accepted"
    command_type: str
    pos_ref_id: str | None = None


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRejected(Event):
    """The command was refused and will not run; ``reason`` is machine-readable."""

    type: ClassVar[str] = "command_rejected"
    reason: str
    """One of the documented rejection reasons (``wrong_type``, ``not_paired``, ...)."""
    detail: str
    """A sentence for people, naming the field at fault."""
    command_type: str | None = None
    pos_ref_id: str | None = None
    entry_id: str | None = None
    """The stream entry id of the refused command, e.g. ``1718000000000-0``."""


# --- lane status and pairing -------------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged(Event):
    """The lane's status or flow changed (:class:`Status`, :class:`Flow`)."""

    type: ClassVar[str] = "status_changed"
    status: str
    flow: str


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Pairing(Event):
    """Progress of pairing (:class:`PairingState`); shows the confirmation code."""

    type: ClassVar[str] = "pairing"
    state: str
    confirmation_code: str | None = None
    """6 hex digits, the same on the terminal's screen (PROTOCOL.md §3.7)."""
    awaiting_pos: bool = False
    """Waiting for ``pair_confirm``."""
    awaiting_terminal: bool = False
    """Waiting for the operator to confirm on the terminal."""
    detail: str | None = None
    """Text for the operator, e.g. why pairing failed."""


# --- a running transaction ---------------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionUpdate(Event):
    """Progress of the running transaction: what the terminal's screen says (PROTOCOL.md §7.9)."""

    type: ClassVar[str] = "transaction_update"
    pos_ref_id: str | None = None
    display_text: str | None = None
    display_code: str | None = None
    awaiting_signature: bool = False
    awaiting_auth_code: bool = False
    attempting_cancel: bool = False


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureRequired(Event):
    """The terminal waits for ``signature_accept`` or ``signature_decline`` (PROTOCOL.md §7.7)."""

    type: ClassVar[str] = "signature_required"
    pos_ref_id: str | None = None
    merchant_receipt: str | None = None
    """The receipt to print and have signed."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeRequired(Event):
    """The terminal waits for ``auth_code``: call the number, quote the merchant id (§7.8)."""

    type: ClassVar[str] = "auth_code_required"
    pos_ref_id: str | None = None
    phone_number: str | None = None
    merchant_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome(Event):
    """The fields of a transaction's outcome (PROTOCOL.md §7.1, "Response fields")."""

    result: str
    """:class:`TxResult`: ``success``, ``failed`` or ``unknown``."""
    pos_ref_id: str | None = None
    tx_type: str | None = None
    """The command type that started it: ``purchase``, ``refund``, ``cashout``..."""
    amount_cents: int | None = None
    tip_cents: int | None = None
    cashout_cents: int | None = None
    surcharge_cents: int | None = None
    host_response_code: str | None = None
    host_response_text: str | None = None
    rrn: str | None = None
    stan: str | None = None
    auth_code: str | None = None
    account_type: str | None = None
    card_entry: str | None = None
    masked_pan: str | None = None
    scheme_name: str | None = None
    terminal_id: str | None = None
    terminal_ref_id: str | None = None
    merchant_id: str | None = None
    bank_date: str | None = None
    bank_time: str | None = None
    customer_receipt: str | None = None
    merchant_receipt: str | None = None
    customer_receipt_printed: bool | None = None
    merchant_receipt_printed: bool | None = None
    error_reason: str | None = None
    error_detail: str | None = None
    preauth_id: str | None = None
    """The preauthorisation a ``preauth_*`` transaction opened or acted on (PROTOCOL.md §7.16)."""
    transaction_type: str | None = None
    """The terminal's own name for the transaction: ``PRE-AUTH``, ``TOPUP``, ``PCOMP``..."""
    balance_before_cents: int | None = None
    """The preauthorisation's balance before this transaction (§7.16 table), when it has one."""
    balance_after_cents: int | None = None
    """The preauthorisation's balance after this transaction (§7.16 table), when it has one."""
    zip_data: JsonObject | None = None
    """Zip's own fields (§7.17): ``location_id``, ``receipt_number``, and ``store_code``
    (purchase) or ``original_receipt_number`` (refund)."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionCompleted(_Outcome):
    """A transaction ended; published exactly once per transaction record."""

    type: ClassVar[str] = "transaction_completed"
    recovered: bool = False
    """True when the outcome was learned after a disconnect or restart (PROTOCOL.md §7.12)."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionLookup(_Outcome):
    """The answer to ``get_transaction`` or ``get_last_transaction`` (PROTOCOL.md §7.10, §7.11).

    Kept apart from ``transaction_completed`` so that a lookup never looks
    like a second outcome of the same transaction.
    """

    type: ClassVar[str] = "transaction_lookup"
    found: bool = False
    """False when the terminal has no such transaction (then ``result`` is ``failed``)."""


# --- the terminal ------------------------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalStatusReport(Event):
    """The answer to ``terminal_status`` (PROTOCOL.md §7.18)."""

    type: ClassVar[str] = "terminal_status"
    success: bool | None = None
    status: str | None = None
    battery_level: int | None = None
    """Percent."""
    charging: bool | None = None


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalConfigurationReport(Event):
    """The answer to ``terminal_configuration`` (PROTOCOL.md §7.19)."""

    type: ClassVar[str] = "terminal_configuration"
    success: bool | None = None
    comms_selected: str | None = None
    merchant_id: str | None = None
    pa_version: str | None = None
    payment_interface_version: str | None = None
    plugin_version: str | None = None
    serial_number: str | None = None
    terminal_id: str | None = None
    terminal_model: str | None = None


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Battery(Event):
    """The terminal reported its battery level unasked (PROTOCOL.md §7.18)."""

    type: ClassVar[str] = "battery"
    battery_level: int
    """Percent."""
    charging: bool | None = None


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Printing(Event):
    """The answer to ``print`` (PROTOCOL.md §7.20)."""

    type: ClassVar[str] = "printing"
    success: bool
    key: str | None = None
    error_reason: str | None = None
    error_detail: str | None = None


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement(Event):
    """The answer to ``settle`` or ``settlement_enquiry`` (PROTOCOL.md §7.14)."""

    type: ClassVar[str] = "settlement"
    result: str
    """:class:`TxResult`."""
    enquiry: bool = False
    """True for ``settlement_enquiry`` (totals only), false for ``settle``."""
    pos_ref_id: str | None = None
    host_response_code: str | None = None
    host_response_text: str | None = None
    terminal_id: str | None = None
    bank_date: str | None = None
    bank_time: str | None = None
    accumulated_total_count: int | None = None
    accumulated_total_value_cents: int | None = None
    merchant_receipt: str | None = None
    merchant_receipt_printed: bool | None = None
    schemes: tuple[JsonObject, ...] = ()
    """Per card scheme totals, as the terminal sent them (numbers are strings there)."""
    error_reason: str | None = None
    error_detail: str | None = None


# --- the lane process --------------------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class LaneStarted(Event):
    """A lane process started serving the lane."""

    type: ClassVar[str] = "lane_started"
    host: str
    pid: int
    restarts: int = 0


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class LaneStopped(Event):
    """A lane process stopped on purpose (ops stop, shutdown, lease lost)."""

    type: ClassVar[str] = "lane_stopped"
    host: str | None = None
    pid: int | None = None
    reason: str | None = None


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class LaneCrashed(Event):
    """A lane process exited unasked; ``crash_loop`` when retries were slowed down."""

    type: ClassVar[str] = "lane_crashed"
    host: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    """The signal number that ended it, when it was killed."""
    restarts: int = 0
    crash_loop: bool = False
    cause: str | None = None
    """The lane's own line on why it ended (``cannot start: master key ... does not open
    ...``), when it could say; also the state hash's ``last_exit_cause``."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Event):
    """Something went wrong that is not a rejected command (a bad terminal frame, Redis)."""

    type: ClassVar[str] = "error"
    reason: str
    detail: str
    source: str | None = None
    """Where: ``terminal``, ``redis``, ``lane``..."""


# --- pay at table (PROTOCOL.md §7.23) --------------------------------------------------------
#
# The terminal asks, the POS answers with ``bill_details`` / ``open_tables``
# naming the event's ``request_id`` before ``answer_by``; after it the lane
# sends the terminal the protocol's error reply and publishes
# ``bill_request_expired``.


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class BillRequested(Event):
    """The terminal asks for a table's bill (``get_bill_details``); answer with ``bill_details``."""

    type: ClassVar[str] = "bill_requested"
    request_id: str
    """Opaque, chosen by the lane; the answer's ``request_id``."""
    answer_by: _dt.datetime
    """When the lane stops waiting and tells the terminal ``INVALID_TABLE_ID``."""
    table_id: str
    operator_id: str
    bill_id: str = ""
    """The bill the terminal already knows of, if any (``""`` when none)."""
    payment_flow_started: bool = False
    """True once the customer has started paying this bill on the terminal."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTablesRequested(Event):
    """The terminal asks for the open tables (``get_open_tables``); answer with ``open_tables``."""

    type: ClassVar[str] = "open_tables_requested"
    request_id: str
    answer_by: _dt.datetime
    """When the lane stops waiting and tells the terminal there are no open tables."""
    operator_id: str


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class BillPaymentReported(Event):
    """The terminal took a payment on a bill (``bill_payment``); answer with ``bill_details``.

    ``duplicate`` is true when the lane already reported a payment with this
    ``terminal_ref_id``: book nothing, answer with the current bill.
    """

    type: ClassVar[str] = "bill_payment_reported"
    request_id: str
    answer_by: _dt.datetime
    """When the lane stops waiting and tells the terminal ``INVALID_TABLE_ID``."""
    bill_id: str
    table_id: str
    operator_id: str
    payment_type: str
    """``card`` or ``cash``."""
    amount_cents: int
    """The purchase amount paid on the bill (tip and surcharge apart)."""
    tip_cents: int = 0
    surcharge_cents: int = 0
    terminal_ref_id: str = ""
    duplicate: bool = False
    payment_summary: JsonObject = field(default_factory=dict)
    """The terminal's payment summary (PROTOCOL.md §7.1 fields: account_type, auth_code,
    card_entry, masked_pan, rrn, scheme_name, terminal_ref_id, amounts...)."""


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class BillFlowEnded(Event):
    """The terminal finished a pay-at-table session (``bill_payment_flow_ended``); no answer."""

    type: ClassVar[str] = "bill_flow_ended"
    request_id: str
    bill_id: str
    table_id: str
    operator_id: str
    bill_total_cents: int
    bill_outstanding_cents: int
    card_total_count: int = 0
    card_total_cents: int = 0
    cash_total_count: int = 0
    cash_total_cents: int = 0


@_register
@dataclass(frozen=True, slots=True, kw_only=True)
class BillRequestExpired(Event):
    """No answer came before ``answer_by``: the terminal got the protocol's error reply
    (unless its link was down: ``error_sent`` is then ``""``)."""

    type: ClassVar[str] = "bill_request_expired"
    request_id: str
    request: str
    """The terminal's request: ``get_bill_details``, ``get_open_tables`` or ``bill_payment``."""
    error_sent: str
    """``INVALID_TABLE_ID`` (bills), ``""`` for open tables (answered with an empty list), and
    ``""`` whenever nothing was sent (the link was down, or dropped since the request came)."""
