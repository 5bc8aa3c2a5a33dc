"""What the client hands back: a money command's :class:`Outcome`, a lane's :class:`LaneInfo`."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from typing import Final

from multipair.broker_schema import JsonObject, TransactionCompleted, TransactionLookup, TxResult
from multipair.store.profiles import LaneProfile

__all__ = ["LaneInfo", "Outcome"]

_COPIED: Final = tuple(
    f.name
    for f in dataclasses.fields(TransactionLookup)
    if f.name != "found" and f.name in {g.name for g in dataclasses.fields(TransactionCompleted)}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The outcome of a money command: purchase, refund, cashout, MOTO, preauth, Zip ...

    ``result`` is ``success``, ``failed`` or ``unknown``; ``unknown`` means no
    outcome could be learned from the terminal: check it (``get_transaction``)
    before charging again. ``event`` is the ``transaction_completed`` event
    with every terminal field (receipts, RRN, masked PAN ...).

    ``repeated`` is true when the lane answered from its record because the
    same ``command_id`` was sent before (a ``transaction_lookup`` with
    ``found: true``); the fields are then those of the first outcome.
    """

    result: str
    pos_ref_id: str
    command_id: str
    recovered: bool
    """The outcome was learned after a disconnect or a lane restart."""
    event: TransactionCompleted
    repeated: bool = False

    @classmethod
    def from_event(
        cls, event: TransactionCompleted | TransactionLookup, *, command_id: str, pos_ref_id: str
    ) -> Outcome:
        """Build one from the final answer to a money command."""
        repeated = isinstance(event, TransactionLookup)
        if isinstance(event, TransactionLookup):
            event = TransactionCompleted(
                **{name: getattr(event, name) for name in _COPIED}, recovered=False
            )
        return cls(
            result=event.result,
            pos_ref_id=event.pos_ref_id or pos_ref_id,
            command_id=event.command_id or command_id,
            recovered=event.recovered,
            event=event,
            repeated=repeated,
        )

    @property
    def approved(self) -> bool:
        """True when the transaction succeeded (``result == 'success'``)."""
        return self.result == TxResult.SUCCESS

    @property
    def unknown(self) -> bool:
        """True when nobody knows whether money moved: look it up before trying again."""
        return self.result == TxResult.UNKNOWN

    @property
    def amount_cents(self) -> int | None:
        return self.event.amount_cents

    @property
    def host_response_code(self) -> str | None:
        return self.event.host_response_code

    @property
    def host_response_text(self) -> str | None:
        return self.event.host_response_text

    @property
    def customer_receipt(self) -> str | None:
        return self.event.customer_receipt

    @property
    def merchant_receipt(self) -> str | None:
        return self.event.merchant_receipt

    @property
    def error_reason(self) -> str | None:
        return self.event.error_reason

    @property
    def error_detail(self) -> str | None:
        return self.event.error_detail

    @property
    def preauth_id(self) -> str | None:
        """The preauthorisation opened (``preauth_open``) or acted on; keep it for the next step."""
        return self.event.preauth_id

    @property
    def transaction_type(self) -> str | None:
        """The terminal's name for it: ``PRE-AUTH``, ``TOPUP``, ``PCOMP``, ``VERIFY`` ..."""
        return self.event.transaction_type

    @property
    def balance_before_cents(self) -> int | None:
        """The preauthorisation's balance before this step (PROTOCOL.md §7.16 table)."""
        return self.event.balance_before_cents

    @property
    def balance_after_cents(self) -> int | None:
        """The preauthorisation's balance after this step (0 once completed or cancelled)."""
        return self.event.balance_after_cents

    @property
    def zip_data(self) -> JsonObject | None:
        """A Zip outcome's ``location_id``, ``receipt_number`` and ``store_code`` (purchase)
        or ``original_receipt_number`` (refund)."""
        return self.event.zip_data


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneInfo:
    """Everything ``multipair status`` shows about one lane.

    Read from the profile, the lane's state hash, its lease and its newest
    transaction record; a field the lane (or its supervisor) never wrote is
    ``None``. ``last_result`` is the newest transaction's result, or its
    state (``requested``, ``sent`` ...) while it is in flight.
    """

    profile: LaneProfile
    status: str | None = None
    flow: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat_at: _dt.datetime | None = None
    started_at: _dt.datetime | None = None
    restarts: int = 0
    last_error: str | None = None
    crash_loop: bool = False
    lease_host: str | None = None
    last_pos_ref_id: str | None = None
    last_result: str | None = None
    last_exit_cause: str | None = None
    """Why the lane's last process ended, in its own words (the supervisor writes it)."""

    @property
    def instance_id(self) -> str:
        return self.profile.instance_id
