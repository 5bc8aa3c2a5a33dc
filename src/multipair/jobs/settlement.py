"""End-of-day settlement of a fleet of lanes: the per-lane record, its decisions, the totals.

Pure (STYLE.md §13): no Redis, no clock of its own. :mod:`multipair.jobs.fleet`
reads the lane's state and report entry, asks these functions what to do,
does it, and writes the entry back.

Rules this module keeps:

- One report per business day (``YYYY-MM-DD``), one entry per lane. An
  entry moves through this table (:data:`_ALLOWED`); anything else raises
  :class:`LocalProtocolError`::

      (none) ──> sending ──> settled                  final
        │          │  ^  ├──> failed  ──> sending     the next attempt
        │          │  │  └──> unknown ──> sending     only when asked (retry_unknown)
        │          └──┘  sending again: the same attempt, re-sent to learn its answer
        └──> failed                                   nothing sent: offline, busy, not paired

- Attempt *n* of lane *L* on day *D* sends ``settle`` with the command id
  ``settle:D:L:n`` (:func:`settle_command_id`), and the entry says
  ``sending`` with that attempt *before* the command is added. A run that
  dies after that finds ``sending`` and sends **the same command id again**:
  the lane claims a ``command_id`` once, so the second entry is refused
  (``duplicate_command_id``) after the first has run, and the first one's
  answer is read from the events stream; if the first never reached the
  stream, the second runs in its place. Either way the terminal settles
  once per attempt.
- A new attempt (a new command id) follows only a definite failure: the
  terminal answered ``failed``, or the lane refused the command (then
  nothing was sent). ``unknown`` (the connection dropped during the
  settlement) is never settled again unless the caller asks: the terminal
  may have closed the day.
- The terminal's totals are compared with the lane's own transaction records
  of the settlement period (:func:`our_totals`): approved purchases, MOTO
  purchases and preauthorisation completions add amount + tip + surcharge
  (preauthorisations count only when completed; Zip is not in the terminal's
  batch), refunds subtract their amount,
  cash-outs add theirs, as the terminal counts them (PROTOCOL.md §7.14). A
  difference in count or value flags the lane (``mismatch``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, LocalProtocolError
from multipair.store.transactions import TxRecord

__all__ = [
    "LANE_ALIVE_S",
    "RETRYABLE",
    "Attempt",
    "Done",
    "LaneRecord",
    "LaneState",
    "OurTotals",
    "Plan",
    "Readiness",
    "Resolve",
    "SchemeTotal",
    "TerminalTotals",
    "Verdict",
    "Why",
    "business_day",
    "day_start",
    "mismatch",
    "move",
    "our_totals",
    "plan",
    "readiness",
    "settle_command_id",
    "summarize",
    "verdict",
]

LANE_ALIVE_S: Final = 10.0
"""A lane whose heartbeat is older than this is not running (it beats every 2 s)."""

_DAY: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


class LaneState(StrEnum):
    """Where one lane's settlement for the day stands (the table in the module docstring)."""

    SENDING = "sending"
    """``settle`` is being sent, or was sent and its answer not yet read."""
    SETTLED = "settled"
    FAILED = "failed"
    UNKNOWN = "unknown"


_ALLOWED: Final[dict[LaneState | None, frozenset[LaneState]]] = {
    None: frozenset({LaneState.SENDING, LaneState.FAILED}),
    LaneState.SENDING: frozenset(
        {LaneState.SENDING, LaneState.SETTLED, LaneState.FAILED, LaneState.UNKNOWN}
    ),
    LaneState.FAILED: frozenset({LaneState.SENDING, LaneState.FAILED}),
    LaneState.UNKNOWN: frozenset({LaneState.SENDING, LaneState.UNKNOWN}),
    LaneState.SETTLED: frozenset(),
}


class Why(StrEnum):
    """Why a lane is not settled: the ``reason`` of its entry."""

    OFFLINE = "offline"
    """The lane does not run, or its terminal is not connected; nothing was sent."""
    BUSY = "busy"
    """The lane stayed in a transaction (or a pairing) for longer than the run waits."""
    NOT_PAIRED = "not_paired"
    REJECTED = "rejected"
    """The lane refused the ``settle`` (``detail`` has its reason); nothing was sent."""
    SETTLEMENT_FAILED = "settlement_failed"
    """The terminal (or the acquirer) answered the settlement with a failure."""
    SETTLEMENT_UNKNOWN = "settlement_unknown"
    """The settlement's outcome is unknown (connection lost during it): check the terminal."""
    NO_ANSWER = "no_answer"
    """Sent, no answer within the run's wait: the lane may still run it; a re-run reads it."""
    ANSWER_LOST = "answer_lost"
    """Sent before, refused as a repeat now, and the first answer is no longer in the stream."""
    IN_PROGRESS = "in_progress"
    """Another run holds the lane's settlement lock (never stored)."""


RETRYABLE: Final = frozenset({Why.OFFLINE, Why.BUSY})
"""Failures a run tries again, a few times, before it reports them."""


def settle_command_id(day: str, instance_id: str, attempt: int) -> str:
    """The ``command_id`` of attempt ``attempt`` (1, 2, ...) to settle a lane for ``day``."""
    return f"settle:{day}:{instance_id}:{attempt}"


def business_day(value: str | _dt.date | None, now: _dt.datetime) -> str:
    """``YYYY-MM-DD``: the day given, or ``now``'s date in local time when None.

    ``CommandError('invalid_value')`` for text that is not a calendar date.
    """
    if value is None:
        return now.astimezone().date().isoformat()
    if isinstance(value, _dt.datetime):
        return value.astimezone().date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            return _dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise CommandError(
        bs.Reason.INVALID_VALUE, f"a business day is YYYY-MM-DD, e.g. 2025-01-31; got {value!r}"
    )


def day_start(day: str) -> _dt.datetime:
    """Local midnight at the start of ``day`` (aware)."""
    return _dt.datetime.combine(_dt.date.fromisoformat(day), _dt.time()).astimezone()


# ---------------------------------------------------------------------- totals


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemeTotal:
    """One card scheme's line of a settlement."""

    scheme: str
    count: int
    value_cents: int

    def to_json(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "count": self.count, "value_cents": self.value_cents}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SchemeTotal:
        return cls(
            scheme=str(data["scheme"]),
            count=int(data["count"]),
            value_cents=int(data["value_cents"]),
        )


def _int(value: object) -> int:
    """A count or value the terminal sent (numbers may arrive as text); 0 when absent."""
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip() or "0")
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalTotals:
    """What the terminal reported in its ``settlement`` event."""

    count: int
    value_cents: int
    schemes: tuple[SchemeTotal, ...] = ()
    host_response_code: str | None = None
    host_response_text: str | None = None
    settled_at: str | None = None
    """The ``at`` of the ``settlement`` event."""

    @classmethod
    def from_event(cls, event: bs.Settlement) -> TerminalTotals:
        """The totals of a ``settlement`` event (a scheme line without a name is skipped)."""
        schemes = tuple(
            SchemeTotal(
                scheme=str(line.get("scheme_name")),
                count=_int(line.get("total_count")),
                value_cents=_int(line.get("total_value_cents", line.get("total_value"))),
            )
            for line in event.schemes
            if isinstance(line, Mapping) and line.get("scheme_name")
        )
        return cls(
            count=event.accumulated_total_count or 0,
            value_cents=event.accumulated_total_value_cents or 0,
            schemes=schemes,
            host_response_code=event.host_response_code,
            host_response_text=event.host_response_text,
            settled_at=bs.format_time(event.at),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "value_cents": self.value_cents,
            "schemes": [s.to_json() for s in self.schemes],
            "host_response_code": self.host_response_code,
            "host_response_text": self.host_response_text,
            "settled_at": self.settled_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TerminalTotals:
        return cls(
            count=int(data["count"]),
            value_cents=int(data["value_cents"]),
            schemes=tuple(SchemeTotal.from_json(s) for s in data.get("schemes") or ()),
            host_response_code=data.get("host_response_code"),
            host_response_text=data.get("host_response_text"),
            settled_at=data.get("settled_at"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OurTotals:
    """The lane's own transaction records of one settlement period, counted as the terminal does."""

    count: int = 0
    value_cents: int = 0
    purchase_count: int = 0
    purchase_value_cents: int = 0
    refund_count: int = 0
    refund_value_cents: int = 0
    """Negative, as the terminal reports refunds."""
    cashout_count: int = 0
    cashout_value_cents: int = 0
    open: int = 0
    """Records of the period still in flight: their outcome is not known yet."""
    unknown: int = 0
    """Records that ended ``unknown``: not counted, and worth a look when totals differ."""
    window_start: str | None = None
    window_end: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OurTotals:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_PURCHASES: Final = frozenset({"purchase", "moto_purchase", "preauth_complete"})
"""Counted as purchases by the terminal: a preauthorisation settles when it is completed
(its capture, amount + surcharge), never when opened, topped up or extended (§7.16).
Zip transactions are not card transactions and are not in the terminal's batch (§7.17)."""


def our_totals(
    records: Iterable[TxRecord], *, window_start: _dt.datetime, window_end: _dt.datetime
) -> OurTotals:
    """Count the approved transactions among ``records`` (those of one settlement period)."""
    totals: dict[str, int] = dict.fromkeys(
        (
            "purchase_count",
            "purchase_value_cents",
            "refund_count",
            "refund_value_cents",
            "cashout_count",
            "cashout_value_cents",
            "open",
            "unknown",
        ),
        0,
    )
    for record in records:
        if not record.completed:
            totals["open"] += 1
            continue
        if record.result is bs.TxResult.UNKNOWN:
            totals["unknown"] += 1
            continue
        if record.result is not bs.TxResult.SUCCESS:
            continue
        if record.tx_type in _PURCHASES:
            totals["purchase_count"] += 1
            totals["purchase_value_cents"] += (
                record.amount_cents + record.tip_cents + record.surcharge_cents
            )
        elif record.tx_type == "refund":
            totals["refund_count"] += 1
            totals["refund_value_cents"] -= record.amount_cents
        elif record.tx_type == "cashout":
            totals["cashout_count"] += 1
            totals["cashout_value_cents"] += record.amount_cents
    count = totals["purchase_count"] + totals["refund_count"] + totals["cashout_count"]
    value = (
        totals["purchase_value_cents"]
        + totals["refund_value_cents"]
        + totals["cashout_value_cents"]
    )
    return OurTotals(
        count=count,
        value_cents=value,
        window_start=bs.format_time(window_start),
        window_end=bs.format_time(window_end),
        **totals,
    )


def mismatch(terminal: TerminalTotals, ours: OurTotals) -> bool:
    """True when the terminal's count or value differs from our records'."""
    return (terminal.count, terminal.value_cents) != (ours.count, ours.value_cents)


# ---------------------------------------------------------------------- the lane's entry


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneRecord:
    """One lane's entry in the day's report (stored as JSON, field ``lane:<instance id>``)."""

    instance_id: str
    state: LaneState
    updated_at: str
    attempt: int = 0
    """The last attempt sent (0: none yet)."""
    command_id: str | None = None
    cursor: str | None = None
    """The lane's events stream position taken before the attempt was sent."""
    sent_at: str | None = None
    expires_at: str | None = None
    """The attempt's ``expires_at``: sent again unchanged when the attempt is re-sent."""
    reason: Why | None = None
    detail: str | None = None
    pos_id: str | None = None
    serial_number: str | None = None
    tenant_code: str | None = None
    terminal: TerminalTotals | None = None
    ours: OurTotals | None = None
    mismatch: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", LaneState(self.state))
        if self.reason is not None:
            object.__setattr__(self, "reason", Why(self.reason))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as text)."""
        return {
            "instance_id": self.instance_id,
            "state": self.state.value,
            "updated_at": self.updated_at,
            "attempt": self.attempt,
            "command_id": self.command_id,
            "cursor": self.cursor,
            "sent_at": self.sent_at,
            "expires_at": self.expires_at,
            "reason": None if self.reason is None else self.reason.value,
            "detail": self.detail,
            "pos_id": self.pos_id,
            "serial_number": self.serial_number,
            "tenant_code": self.tenant_code,
            "terminal": None if self.terminal is None else self.terminal.to_json(),
            "ours": None if self.ours is None else self.ours.to_json(),
            "mismatch": self.mismatch,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaneRecord:
        terminal = data.get("terminal")
        ours = data.get("ours")
        return cls(
            instance_id=str(data["instance_id"]),
            state=LaneState(data["state"]),
            updated_at=str(data["updated_at"]),
            attempt=int(data.get("attempt") or 0),
            command_id=data.get("command_id"),
            cursor=data.get("cursor"),
            sent_at=data.get("sent_at"),
            expires_at=data.get("expires_at"),
            reason=None if data.get("reason") is None else Why(data["reason"]),
            detail=data.get("detail"),
            pos_id=data.get("pos_id"),
            serial_number=data.get("serial_number"),
            tenant_code=data.get("tenant_code"),
            terminal=None if terminal is None else TerminalTotals.from_json(terminal),
            ours=None if ours is None else OurTotals.from_json(ours),
            mismatch=data.get("mismatch"),
        )


def move(before: LaneRecord | None, after: LaneRecord) -> LaneRecord:
    """``after``, if the table allows going there from ``before``; else LocalProtocolError."""
    state = None if before is None else before.state
    if after.state not in _ALLOWED[state]:
        raise LocalProtocolError(
            f"lane {after.instance_id}: settlement entry cannot go from {state} to {after.state}"
        )
    if before is not None and after.attempt < before.attempt:
        raise LocalProtocolError(
            f"lane {after.instance_id}: attempt {after.attempt} after attempt {before.attempt}"
        )
    return after


# ---------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing to send: the entry is final for this run (settled, or unknown not retried)."""

    record: LaneRecord


@dataclass(frozen=True, slots=True)
class Resolve:
    """An attempt was sent (or was about to be) and its answer never recorded: learn it."""

    record: LaneRecord


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send attempt ``number``."""

    number: int


Plan = Done | Resolve | Attempt


def plan(record: LaneRecord | None, *, retry_unknown: bool = False) -> Plan:
    """What to do with a lane whose day entry is ``record`` (None: never tried today)."""
    if record is None:
        return Attempt(1)
    match record.state:
        case LaneState.SETTLED:
            return Done(record)
        case LaneState.SENDING:
            return Resolve(record)
        case LaneState.UNKNOWN:
            return Attempt(record.attempt + 1) if retry_unknown else Done(record)
        case LaneState.FAILED:
            return Attempt(record.attempt + 1)
    raise LocalProtocolError(f"no plan for state {record.state!r}")  # pragma: no cover


class Readiness(StrEnum):
    """Whether a lane can take a ``settle`` now, from its state hash."""

    READY = "ready"
    BUSY = "busy"
    OFFLINE = "offline"
    NOT_PAIRED = "not_paired"


def readiness(state: Mapping[str, str], now: _dt.datetime) -> tuple[Readiness, str]:
    """The lane's readiness and a sentence for people, from ``mp:lane:{ID}:state``."""
    status = state.get("status") or None
    if status == bs.Status.UNPAIRED:
        return Readiness.NOT_PAIRED, "the lane is not paired with its terminal"
    beat = _parse_time(state.get("heartbeat_at"))
    if beat is None:
        return Readiness.OFFLINE, "the lane is not running (it has never reported)"
    age = (now - beat).total_seconds()
    if age > LANE_ALIVE_S:
        return Readiness.OFFLINE, f"the lane is not running (last heartbeat {age:.0f} s ago)"
    if status != bs.Status.PAIRED_CONNECTED:
        error = state.get("last_error")
        why = f": {error}" if error else ""
        return Readiness.OFFLINE, f"the terminal is not connected ({status}){why}"
    flow = state.get("flow") or bs.Flow.IDLE
    if flow != bs.Flow.IDLE:
        return Readiness.BUSY, f"the lane is busy ({flow})"
    return Readiness.READY, "ready"


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        return bs.parse_time(text)
    except (CommandError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an answer to ``settle`` means for the lane's entry."""

    state: LaneState
    reason: Why | None = None
    detail: str | None = None
    terminal: TerminalTotals | None = None


def verdict(event: bs.Event) -> Verdict:
    """The entry's next state from the event that answered ``settle`` (settlement or refusal)."""
    if isinstance(event, bs.Settlement):
        totals = TerminalTotals.from_event(event)
        text = " ".join(
            str(part)
            for part in (
                event.host_response_code,
                event.host_response_text,
                event.error_reason,
                event.error_detail,
            )
            if part
        )
        if event.result == bs.TxResult.SUCCESS:
            return Verdict(LaneState.SETTLED, None, text or None, totals)
        if event.result == bs.TxResult.FAILED:
            return Verdict(LaneState.FAILED, Why.SETTLEMENT_FAILED, text or "failed", totals)
        return Verdict(
            LaneState.UNKNOWN,
            Why.SETTLEMENT_UNKNOWN,
            (text or "the settlement's outcome is unknown")
            + "; check the terminal (a settlement enquiry) before settling again",
        )
    if isinstance(event, bs.CommandRejected):
        detail = f"{event.reason}: {event.detail}"
        lowered = event.detail.lower()
        if event.reason == bs.Reason.DUPLICATE_COMMAND_ID:
            return Verdict(
                LaneState.UNKNOWN,
                Why.ANSWER_LOST,
                "the settle was sent before and its answer is no longer in the lane's "
                "events; check the terminal before settling again",
            )
        if event.reason == bs.Reason.TERMINAL_UNAVAILABLE:
            return Verdict(LaneState.FAILED, Why.OFFLINE, detail)
        if event.reason == bs.Reason.EXPIRED or "not idle" in lowered:
            return Verdict(LaneState.FAILED, Why.BUSY, detail)
        if "not paired" in lowered:
            return Verdict(LaneState.FAILED, Why.NOT_PAIRED, detail)
        return Verdict(LaneState.FAILED, Why.REJECTED, detail)
    raise LocalProtocolError(f"a {event.type!r} event does not answer a settle")


# ---------------------------------------------------------------------- the fleet's totals


def summarize(records: Iterable[LaneRecord]) -> dict[str, Any]:
    """Fleet totals over lane entries: lanes by state, the terminals' and our totals."""
    by_state: dict[str, int] = {s.value: 0 for s in LaneState}
    terminal_count = terminal_value = ours_count = ours_value = 0
    schemes: dict[str, dict[str, int]] = {}
    mismatched: list[str] = []
    lanes = 0
    for record in records:
        lanes += 1
        by_state[record.state.value] = by_state.get(record.state.value, 0) + 1
        if record.state is not LaneState.SETTLED:
            continue
        if record.terminal is not None:
            terminal_count += record.terminal.count
            terminal_value += record.terminal.value_cents
            for line in record.terminal.schemes:
                entry = schemes.setdefault(line.scheme, {"count": 0, "value_cents": 0})
                entry["count"] += line.count
                entry["value_cents"] += line.value_cents
        if record.ours is not None:
            ours_count += record.ours.count
            ours_value += record.ours.value_cents
        if record.mismatch:
            mismatched.append(record.instance_id)
    return {
        "lanes": lanes,
        **by_state,
        "mismatched": len(mismatched),
        "mismatched_lanes": sorted(mismatched),
        "terminal": {
            "count": terminal_count,
            "value_cents": terminal_value,
            "schemes": {name: schemes[name] for name in sorted(schemes)},
        },
        "ours": {"count": ours_count, "value_cents": ours_value},
    }
