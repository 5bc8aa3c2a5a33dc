"""Session events -> the writes they make: what one round of the SPI session's events means.

The lane shell takes a round of :class:`~multipair.spi.pos.PosSession`
events, reads the running transaction's record when an event needs it
(:func:`record_key`), and asks :meth:`EventWrites.plan` what each event
writes. The plan adds its Redis writes to the round's :class:`RoundWrites`
(one fenced write, applied before any frame of the round leaves), queues
what is woken once that landed, and returns the few effects the shell must
carry out itself in order (:class:`SaveSecrets`, :class:`SaveToken`,
:class:`NoteState`, :class:`CloseLink`). Nothing here awaits or touches
Redis; the lane's module docstring says why the order matters.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from multipair import broker_schema as bs
from multipair import failpoints
from multipair.broker_schema import counters
from multipair.logs import get_logger
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.store.transactions import TxRecord, TxState, TxStore
from multipair.worker.entries import Entry
from multipair.worker.pump import Answer, answer_to
from multipair.worker.tamper import RejectionMonitor
from multipair.worker.translate import (
    completed_event,
    pairing_end,
    settlement_event,
    tx_kind,
)
from multipair.worker.writes import TxResultCode, WriteBatch

__all__ = [
    "AskPos",
    "Awaited",
    "CloseLink",
    "Effect",
    "EventWrites",
    "NoteState",
    "RoundWrites",
    "Running",
    "SaveSecrets",
    "SaveToken",
    "record_key",
    "settle",
]

log = get_logger("multipair.worker.lane")  # the lane's log lines, as they always were


@dataclass(slots=True)
class RoundWrites:
    """What one round of session events writes, and what it wakes once that is written.

    The round's writes go to Redis as one fenced script before any of the
    round's frames go to the terminal; only then are the waiters woken
    (``after``), so nobody acts on an outcome or an answer before it is
    stored. An effect that must write elsewhere first (secrets, in the
    profile) commits what is pending before it, keeping the order.
    """

    batch: WriteBatch = field(default_factory=WriteBatch)
    after: list[Callable[[], None]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    """The results of the last commit, by op index (read by ``after`` callbacks)."""


@dataclass(frozen=True, slots=True)
class SaveSecrets:
    """Commit what is pending, then store the session's new keys (persist before use, §5.7)."""

    event: spi.SecretsChanged


@dataclass(frozen=True, slots=True)
class SaveToken:
    """Commit what is pending, then store the POS SPI token (§13.10)."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NoteState:
    """The running transaction's record (kept in memory) moved to ``state``."""

    pos_ref_id: str
    state: TxState
    result: bs.TxResult | None = None


@dataclass(frozen=True, slots=True)
class CloseLink:
    """Close the terminal link once the round's frames are out."""


@dataclass(frozen=True, slots=True)
class AskPos:
    """A pay-at-table request: publish it in this round (:mod:`multipair.worker.pay_at_table`)."""

    event: spi.PayAtTableRequest


Effect = SaveSecrets | SaveToken | NoteState | CloseLink | AskPos


@dataclass(frozen=True, slots=True, kw_only=True)
class Awaited:
    """A request waiting for the terminal's answer: what it expects, and who waits."""

    kind: type
    """The answer's type (``m.TerminalStatus``, ``spi.TransactionLookupResult``, ...)."""
    future: asyncio.Future[Any]


@dataclass(slots=True, kw_only=True)
class Running:
    """What the lane is doing when an event arrives: what the plan may wake or acknowledge."""

    entry: Entry | None
    """The transaction command running, if any."""
    tx_done: asyncio.Future[spi.TransactionCompleted] | None
    pairing_done: asyncio.Future[spi.PairingFinished] | None
    answers: dict[str, Awaited]
    """Requests waiting for the terminal's answer, by message id."""
    status: spi.SpiStatus
    flow: spi.SpiFlow
    at: _dt.datetime
    """Wall time, for the events' ``at``."""
    monotonic: float
    """Monotonic time (outcome durations, the rejection monitor)."""

    @property
    def command_id(self) -> str | None:
        """The ``command_id`` events of the running command carry."""
        return self.entry.command.command_id if self.entry is not None else None


def record_key(event: spi.PosSessionEvent) -> tuple[str, m.TxType | None] | None:
    """Which transaction record the plan of ``event`` needs: (pos_ref_id, tx_type), or None.

    The tx_type, when given, must be the record's own (a reversal names the
    purchase it reverses, §7.15, and must never move or complete it).
    """
    match event:
        case spi.TransactionRequestSent():
            return event.pos_ref_id, event.tx_type
        case spi.SignatureRequired() | spi.AuthCodeRequired():
            return event.pos_ref_id, None
        case spi.TransactionCompleted():
            return event.pos_ref_id, event.tx_type
    return None


def settle(future: asyncio.Future[Any], value: object) -> None:
    """Set ``future``'s result unless it is done already."""
    if not future.done():
        future.set_result(value)


class EventWrites:
    """Plans the writes of the session's events for one lane (no I/O)."""

    def __init__(
        self,
        instance_id: str,
        keys: bs.Keys,
        txs: TxStore,
        events_maxlen: int,
        rejections: RejectionMonitor,
    ) -> None:
        self.instance_id = instance_id
        self.keys = keys
        self.txs = txs
        self.events_maxlen = events_maxlen
        self.rejections = rejections

    # -- events ---------------------------------------------------------

    def add(self, batch: WriteBatch, event: bs.Event) -> None:
        """Append ``event`` to the lane's event stream, in ``batch``."""
        batch.xadd(
            self.keys.events(self.instance_id), bs.encode_event(event), maxlen=self.events_maxlen
        )

    def add_event(
        self, batch: WriteBatch, at: _dt.datetime, cls: type[bs.Event], **fields: Any
    ) -> None:
        """Append a new ``cls`` event of this lane, in ``batch``."""
        self.add(batch, cls(instance_id=self.instance_id, at=at, **fields))

    def add_status(
        self, batch: WriteBatch, status: spi.SpiStatus, flow: spi.SpiFlow, at: _dt.datetime
    ) -> None:
        """The state hash's status and flow, and the ``status_changed`` event."""
        status_text, flow_text = str(status), str(flow)
        batch.hset(self.keys.state(self.instance_id), {"status": status_text, "flow": flow_text})
        self.add_event(batch, at, bs.StatusChanged, status=status_text, flow=flow_text)

    def move(
        self,
        batch: WriteBatch,
        effects: list[Effect],
        pos_ref_id: str,
        state: TxState,
        *,
        request_message_id: str | None = None,
    ) -> None:
        """Move the transaction's record to ``state`` in ``batch``, and note it in ``effects``."""
        batch.tx(
            self.txs.move_op(
                self.instance_id, pos_ref_id, state, request_message_id=request_message_id
            )
        )
        effects.append(NoteState(pos_ref_id, state))

    def ask_pos(
        self,
        batch: WriteBatch,
        effects: list[Effect],
        record: TxRecord | None,
        state: TxState,
        event: bs.SignatureRequired | bs.AuthCodeRequired,
    ) -> None:
        """The terminal waits for the POS: the record (if any) moves to ``state``, then
        ``event`` (which asks the POS) is published, in ``batch``."""
        if record is not None:
            self.move(batch, effects, record.pos_ref_id, state)
        self.add(batch, event)

    # -- the plan -------------------------------------------------------

    def plan(
        self,
        event: spi.PosSessionEvent,
        running: Running,
        record: TxRecord | None,
        writes: RoundWrites,
    ) -> list[Effect]:
        """Add ``event``'s writes and wakes to ``writes``; return what the shell must do.

        ``record``: the transaction record named by :func:`record_key`, when
        it exists (None otherwise).
        """
        batch, at, command_id = writes.batch, running.at, running.command_id
        effects: list[Effect] = []
        match event:
            case spi.StatusChanged():
                self.add_status(batch, running.status, running.flow, at)
            case spi.PairingProgress():
                self.add_event(
                    batch,
                    at,
                    bs.Pairing,
                    command_id=command_id,
                    state=(
                        bs.PairingState.AWAITING_CONFIRMATION
                        if event.confirmation_code
                        else bs.PairingState.STARTED
                    ).value,
                    confirmation_code=event.confirmation_code,
                    awaiting_pos=event.awaiting_pos_confirmation,
                    awaiting_terminal=event.awaiting_terminal_confirmation,
                    detail=event.message,
                )
            case spi.PairingFinished():
                self.add_event(
                    batch,
                    at,
                    bs.Pairing,
                    command_id=command_id,
                    state=pairing_end(event).value,
                    detail=event.message,
                )
                done = running.pairing_done
                if done is not None:
                    writes.after.append(lambda: settle(done, event))
            case spi.SecretsChanged():
                effects.append(SaveSecrets(event))
            case spi.TransactionRequestSent():
                # Written before the frame leaves (the shell commits, then sends).
                if record is not None:
                    self.move(
                        batch,
                        effects,
                        event.pos_ref_id,
                        TxState.SENT,
                        request_message_id=event.message_id,
                    )
            case spi.TransactionUpdate():
                self.add_event(
                    batch,
                    at,
                    bs.TransactionUpdate,
                    command_id=command_id,
                    pos_ref_id=event.pos_ref_id,
                    display_text=event.display_message_text,
                    display_code=None
                    if event.display_message_code is None
                    else str(event.display_message_code),
                )
            case spi.SignatureRequired():
                self.ask_pos(
                    batch,
                    effects,
                    record,
                    TxState.AWAITING_SIGNATURE,
                    bs.SignatureRequired(
                        instance_id=self.instance_id,
                        at=at,
                        command_id=command_id,
                        pos_ref_id=event.pos_ref_id,
                        merchant_receipt=event.merchant_receipt,
                    ),
                )
                # Dies once the state and the event are stored, as it always did.
                writes.after.append(lambda: failpoints.hit("lane.awaiting_signature"))
            case spi.AuthCodeRequired():
                self.ask_pos(
                    batch,
                    effects,
                    record,
                    TxState.AWAITING_AUTH_CODE,
                    bs.AuthCodeRequired(
                        instance_id=self.instance_id,
                        at=at,
                        command_id=command_id,
                        pos_ref_id=event.pos_ref_id,
                        phone_number=event.auth_centre_phone_number,
                        merchant_id=event.merchant_id,
                    ),
                )
            case spi.CancelFailed():
                self.add_event(
                    batch,
                    at,
                    bs.TransactionUpdate,
                    command_id=command_id,
                    pos_ref_id=event.pos_ref_id,
                    display_text=f"cancel refused: {event.error_reason}",
                )
            case spi.TransactionCompleted():
                effects += self._outcome(event, running, record, writes)
            case spi.TransactionLookupResult() | spi.LastTransactionResult():
                writes.after.append(lambda: _resolve(running.answers, event, event))
            case spi.TerminalAnswer():
                self._terminal_answer(event, running, writes)
            case spi.PosSpiTokenReceived():
                effects.append(SaveToken(event.token))
            case spi.TerminalErrorReceived():
                self.add_event(
                    batch,
                    at,
                    bs.Error,
                    command_id=command_id,
                    reason=event.error_reason or "terminal_error",
                    detail=event.error_detail or "",
                    source="terminal",
                )
            case spi.PayAtTableRequest():
                effects.append(AskPos(event))
            case spi.FrameRejected():
                self._frame_rejected(event, running, batch)
            case spi.BillPaymentRefused():
                # The terminal was told no, yet it may have charged the card:
                # people must know. No news of the command that runs, if any.
                detail = f"{event.why}; a bill payment was refused and not booked ({event.payment})"
                log.warning("bill payment refused", why=event.why, payment=event.payment)
                self.add_event(
                    batch,
                    at,
                    bs.Error,
                    command_id=None,
                    reason="bill_payment_refused",
                    detail=detail,
                    source="terminal",
                )
            case spi.IgnoredMessage():
                log.info("terminal message ignored", terminal_event=event.event, why=event.reason)
            case spi.CloseConnection():
                log.info("closing terminal connection", why=event.reason)
                effects.append(CloseLink())
        return effects

    def _frame_rejected(
        self, event: spi.FrameRejected, running: Running, batch: WriteBatch
    ) -> None:
        """Count it; log once per kind a minute; one ``link_tampering`` error per burst."""
        kind = str(event.reason)
        verdict = self.rejections.note(kind, running.monotonic)
        if verdict.log:
            log.warning(
                "terminal frame rejected",
                reason=kind,
                detail=event.detail,
                suppressed_since_last=verdict.suppressed,
            )
        state = self.keys.state(self.instance_id)
        batch.hincrby(state, "frames_rejected")
        batch.hincrby(state, f"frames_rejected:{kind}")
        if verdict.alarm is not None:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(verdict.alarm.items()))
            log.error("terminal link tampering suspected", counts=verdict.alarm)
            self.add_event(
                batch,
                running.at,
                bs.Error,
                command_id=running.command_id,
                reason="link_tampering",
                detail=(
                    f"{sum(verdict.alarm.values())} terminal frames rejected within "
                    f"{self.rejections.window_s:g} s ({counts}); they were dropped, "
                    "nothing acted on them"
                ),
                source="terminal",
            )

    def _terminal_answer(
        self, event: spi.TerminalAnswer, running: Running, writes: RoundWrites
    ) -> None:
        answer = event.answer
        answers = running.answers
        match answer:
            case m.TerminalStatus() | m.TerminalConfiguration() | m.PrintResponse():
                writes.after.append(lambda: _resolve(answers, event, answer))
            case m.BatteryLevelChanged():
                if answer.battery_level is not None:
                    self.add_event(
                        writes.batch, running.at, bs.Battery, battery_level=answer.battery_level
                    )
            case m.SetPosInfoResponse():
                log.info("terminal took POS info", success=answer.success)

    def _outcome(
        self,
        done: spi.TransactionCompleted,
        running: Running,
        record: TxRecord | None,
        writes: RoundWrites,
    ) -> list[Effect]:
        """Store the outcome, publish it and acknowledge its command in one step; then wake.

        The acknowledgement joins the outcome's write when the running
        command is the one that completed, so the runner does not send it
        again; otherwise (a recovered orphan) there is nothing to acknowledge.
        """
        iid = self.instance_id
        batch = writes.batch
        entry = running.entry
        command_id = running.command_id
        if record is not None and command_id is None:
            command_id = record.command_id
        if done.tx_type in (m.TxType.SETTLE, m.TxType.SETTLEMENT_ENQUIRY):
            outcome_event: bs.Event = settlement_event(iid, command_id, done, running.at)
        else:
            outcome_event = completed_event(iid, command_id, done, record, running.at)
        effects: list[Effect] = []
        slot: int | None = None
        if record is not None:
            slot = batch.tx(
                self.txs.complete_op(
                    iid,
                    done.pos_ref_id,
                    result=bs.TxResult(str(done.outcome)),
                    outcome=bs.event_to_json(outcome_event),
                    publish_to=self.keys.events(iid),
                    publish_fields=bs.encode_event(outcome_event),
                    maxlen=self.events_maxlen,
                )
            )
            effects.append(
                NoteState(done.pos_ref_id, TxState.COMPLETED, bs.TxResult(str(done.outcome)))
            )
        else:
            self.add(batch, outcome_event)
        tx_done = running.tx_done
        acked = (
            entry
            if entry is not None
            and tx_done is not None
            and (getattr(entry.command, "pos_ref_id", None) or "") == done.pos_ref_id
            else None
        )
        if acked is not None:
            batch.xack(self.keys.commands(iid), acked.entry_id)
        # Counted in the outcome's own write (issue 15; broker_schema.counters).
        kind = tx_kind(done.tx_type)
        state = self.keys.state(iid)
        batch.hincrby(state, counters.tx_count(kind, str(done.outcome)))
        if acked is not None and not done.recovered:
            for name, amount in counters.tx_duration(kind, running.monotonic - acked.read_at):
                batch.hincrby(state, name, amount)

        def wake() -> None:
            if slot is not None and writes.results[slot] == TxResultCode.ALREADY_COMPLETED:
                log.warning("outcome already recorded; not published again")
            log.info(
                "transaction completed",
                pos_ref_id=done.pos_ref_id,
                result=str(done.outcome),
                recovered=done.recovered,
            )
            if acked is not None:
                acked.acked = True
            if tx_done is not None:
                settle(tx_done, done)

        writes.after.append(wake)
        return effects


def _resolve(answers: dict[str, Awaited], event: Answer, value: object) -> None:
    """Wake the request ``event`` answers (by message id), with ``value``."""
    for message_id, awaited in answers.items():
        if isinstance(value, awaited.kind) and answer_to(message_id, event) is not None:
            del answers[message_id]
            settle(awaited.future, value)
            return
