"""The POS side of SPI as a sans-I/O session (PROTOCOL.md §4, §5, §7, §8, §13).

The session is fed what happens (a socket opened or closed, a text frame, the
time) and hands back what to do: text frames to send (:meth:`data_to_send`),
events for the lane (:meth:`events_received`) and the next moment it needs to
be woken (:meth:`next_deadline`). It never reads a clock, opens a socket or
sleeps; ``now`` is the caller's wall clock in seconds.

Rules it keeps:

- Status and flow are the reference client's (§8.1, §8.2) and move only along
  the tables below; an illegal request raises :class:`LocalProtocolError`.
- One transaction at a time. A transaction started while the link is down is
  kept and sent at the next "ready to transact" (first pong, §5.3).
- A transaction request is sent at most once per session. After a reconnect,
  or when resumed with :meth:`PosSession.recover` after a restart, the session
  asks the terminal (``get_transaction``, §7.12) and never re-sends (§7.12.6).
- The 1 s transaction monitor of the reference client (§8.4) is kept as a
  tick anchored at the moment the request went out, so ``get_transaction``
  polls and cancel give-ups land on the same seconds as 2.9.13 (§13.7).
- Responses are matched on ``pos_ref_id`` wherever they carry one (§13.9).
- Key rollover (§5.7): the reply under the new keys is held back until the
  caller confirms it persisted them (:meth:`PosSession.secrets_persisted`),
  and frames still signed with the old keys are accepted only until the
  first frame verifies under the new ones (§13.6).
- A ``get_transaction`` lookup that fails for a reason other than "not found"
  ends the transaction **Unknown**, not Failed as the reference client does
  (§7.10 R9): a failed lookup says nothing about the money.

Link integrity (stricter than the reference clients; docs/security.md):

- Once the session holds keys, only frames that verify under them count. A
  plaintext frame is a :class:`FrameRejected` (counted as an invalid
  signature) and is never dispatched; the one exception is a plaintext
  ``pair_response`` while a pairing waits for the terminal's confirmation,
  which the sources allow (§4.3) and which cannot move money.
- Replies are bound to what they answer. ``get_transaction_response`` must
  carry the id of the latest ``get_transaction`` *and* name the transaction's
  ``pos_ref_id`` (outside or inside ``tx``), and never another one; a
  settlement or get-last-transaction response (no ``pos_ref_id``, §7.14)
  must carry the request's id. Anything else is ignored and the transaction
  keeps recovering. An id already answered is not answered twice.
- Request ids start from a value drawn from :mod:`secrets` per session, not
  from 1, so a reply recorded on an earlier connection or by an earlier
  process cannot be aimed at a future request.
- Key-exchange values are plain hex only; anything else fails the pairing.
"""

from __future__ import annotations

import dataclasses
import random
import secrets as _csprng
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from multipair.exceptions import CryptoError, InvalidRequest, LocalProtocolError
from multipair.spi import messages as m
from multipair.spi.address import DEFAULT_TIMINGS, Timings, is_valid_pos_id
from multipair.spi.common import PRINTERLESS_MODELS, CloseConnection, FrameRejected
from multipair.spi.crypto import (
    Secrets,
    confirmation_code,
    dh_public_key,
    dh_secret_to_key,
    dh_shared_secret,
    generate_private_key,
    int_to_hex,
    parse_public_key,
)
from multipair.spi.envelope import (
    Generation,
    Message,
    MessageStamp,
    Received,
    RejectedFrame,
    RejectReason,
    decode_frame,
)

__all__ = [
    "PRINTERLESS_MODELS",
    "AuthCodeRequired",
    "CancelFailed",
    "CloseConnection",
    "FrameRejected",
    "IgnoredMessage",
    "LastTransactionResult",
    "Outcome",
    "PairingFinished",
    "PairingProgress",
    "PairingStep",
    "PosInfo",
    "PosSession",
    "PosSessionEvent",
    "PosSpiTokenReceived",
    "SecretsChanged",
    "SignatureRequired",
    "SpiFlow",
    "SpiStatus",
    "StatusChanged",
    "TerminalAnswer",
    "TerminalErrorReceived",
    "TransactionCompleted",
    "TransactionLookupResult",
    "TransactionRequestSent",
    "TransactionUpdate",
    "TxPhase",
]


class SpiStatus(StrEnum):
    """§8.1."""

    UNPAIRED = "unpaired"
    PAIRED_CONNECTING = "paired_connecting"
    PAIRED_CONNECTED = "paired_connected"


class SpiFlow(StrEnum):
    """§8.2."""

    IDLE = "idle"
    PAIRING = "pairing"
    TRANSACTION = "transaction"


class Outcome(StrEnum):
    """A transaction's result as the POS can know it (§7.1 SuccessState)."""

    SUCCESS = "success"
    FAILED = "failed"
    UNKNOWN = "unknown"


class PairingStep(StrEnum):
    """Where a pairing stands (§4.2–§4.5)."""

    WAITING_FOR_CONNECTION = "waiting_for_connection"
    WAITING_FOR_KEY_REQUEST = "waiting_for_key_request"
    WAITING_FOR_KEY_CHECK = "waiting_for_key_check"
    CONFIRMING = "confirming"
    FINISHED = "finished"


# Allowed pairing moves: (from step, trigger) -> to step.
_PAIRING_MOVES: Final[dict[tuple[PairingStep, str], PairingStep]] = {
    (PairingStep.WAITING_FOR_CONNECTION, "connected"): PairingStep.WAITING_FOR_KEY_REQUEST,
    (PairingStep.WAITING_FOR_KEY_REQUEST, "key_request"): PairingStep.WAITING_FOR_KEY_CHECK,
    (PairingStep.WAITING_FOR_KEY_REQUEST, "connection_lost"): PairingStep.WAITING_FOR_CONNECTION,
    (PairingStep.WAITING_FOR_KEY_CHECK, "key_check"): PairingStep.CONFIRMING,
    (PairingStep.WAITING_FOR_KEY_CHECK, "connection_lost"): PairingStep.WAITING_FOR_CONNECTION,
    (PairingStep.CONFIRMING, "connection_lost"): PairingStep.WAITING_FOR_CONNECTION,
    (PairingStep.CONFIRMING, "both_confirmed"): PairingStep.FINISHED,
}


class TxPhase(StrEnum):
    """Where the current transaction stands (§8.3)."""

    UNSENT = "unsent"
    SENT = "sent"
    AWAITING_SIGNATURE = "awaiting_signature"
    AWAITING_AUTH_CODE = "awaiting_auth_code"
    COMPLETED = "completed"


_TX_MOVES: Final[dict[TxPhase, frozenset[TxPhase]]] = {
    TxPhase.UNSENT: frozenset({TxPhase.SENT, TxPhase.COMPLETED}),
    TxPhase.SENT: frozenset(
        {TxPhase.AWAITING_SIGNATURE, TxPhase.AWAITING_AUTH_CODE, TxPhase.COMPLETED}
    ),
    TxPhase.AWAITING_SIGNATURE: frozenset({TxPhase.SENT, TxPhase.COMPLETED}),
    TxPhase.AWAITING_AUTH_CODE: frozenset({TxPhase.SENT, TxPhase.COMPLETED}),
    TxPhase.COMPLETED: frozenset(),
}


# --------------------------------------------------------------------------
# Events handed to the caller
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged:
    """Status or flow moved (§8.1, §8.2)."""

    status: SpiStatus
    flow: SpiFlow


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingProgress:
    """Pairing moved on; ``confirmation_code`` is set once both sides derived keys."""

    step: PairingStep
    message: str
    confirmation_code: str | None = None
    awaiting_pos_confirmation: bool = False
    awaiting_terminal_confirmation: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingFinished:
    """Pairing ended (§4.4): on success the keys arrive in :class:`SecretsChanged` first."""

    success: bool
    message: str
    cancelled: bool = False
    """True when the POS side cancelled it (:meth:`PosSession.pair_cancel`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretsChanged:
    """The keys changed: persist them. ``None`` means forget them (unpaired).

    For ``reason == "rolled"`` the reply that uses the new keys is held back
    until :meth:`PosSession.secrets_persisted` is called (§5.7).
    """

    secrets: Secrets | None
    reason: str
    previous: Secrets | None = None
    """Keys to keep beside ``secrets`` until the terminal confirms a roll (§13.6)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionRequestSent:
    """The transaction's request was handed to :meth:`PosSession.data_to_send`."""

    pos_ref_id: str
    tx_type: m.TxType
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionUpdate:
    """Progress text from the terminal's screen (§7.9)."""

    pos_ref_id: str
    display_message_text: str
    display_message_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureRequired:
    """The terminal waits for signature accept/decline (§7.7).

    ``placeholder`` is true when it was learned from a ``get_transaction``
    answer and the real receipt is not available (§7.10 R1).
    """

    pos_ref_id: str
    merchant_receipt: str
    placeholder: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeRequired:
    """The terminal waits for a phone authorisation code (§7.8)."""

    pos_ref_id: str
    auth_centre_phone_number: str
    merchant_id: str
    placeholder: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelFailed:
    """The terminal refused to cancel (§7.6); the transaction goes on."""

    pos_ref_id: str
    error_reason: str
    error_detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionCompleted:
    """The transaction ended. ``recovered`` when learned after a disconnect or restart."""

    pos_ref_id: str
    tx_type: m.TxType
    outcome: Outcome
    message: str
    recovered: bool = False
    response: m.TransactionResponse | m.SettlementResponse | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionLookupResult:
    """Answer to a caller's :meth:`PosSession.lookup_transaction`."""

    pos_ref_id: str
    response: m.GetTransactionResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class LastTransactionResult:
    """Answer to a caller's :meth:`PosSession.lookup_last_transaction` (§7.11)."""

    response: m.TransactionResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalAnswer:
    """A terminal reply with no effect on the flows: status, configuration, battery, print,
    POS info (§7.18–§7.21)."""

    answer: (
        m.TerminalStatus
        | m.TerminalConfiguration
        | m.BatteryLevelChanged
        | m.PrintResponse
        | m.SetPosInfoResponse
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PosSpiTokenReceived:
    """``provision_pos_spi_token`` (§13.10). A secret: keep it out of logs and events."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalErrorReceived:
    """An ``error`` message from the terminal (§9)."""

    error_reason: str
    error_detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoredMessage:
    """A well-formed message that does not fit the current state; it was ignored."""

    event: str
    reason: str


PosSessionEvent = (
    StatusChanged
    | PairingProgress
    | PairingFinished
    | SecretsChanged
    | TransactionRequestSent
    | TransactionUpdate
    | SignatureRequired
    | AuthCodeRequired
    | CancelFailed
    | TransactionCompleted
    | TransactionLookupResult
    | LastTransactionResult
    | TerminalAnswer
    | PosSpiTokenReceived
    | TerminalErrorReceived
    | FrameRejected
    | IgnoredMessage
    | CloseConnection
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PosInfo:
    """What ``set_pos_info`` tells the terminal (§7.21)."""

    pos_vendor_id: str
    pos_version: str
    library_version: str
    library_language: str = "python"
    device_system: str = ""
    spice_version: str | None = None


# --------------------------------------------------------------------------
# Internal flow state
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Pairing:
    step: PairingStep = PairingStep.WAITING_FOR_CONNECTION
    request_id: str = ""
    code: str | None = None
    awaiting_pos: bool = False
    awaiting_terminal: bool = False
    retries: int = 0

    def move(self, trigger: str) -> None:
        target = _PAIRING_MOVES.get((self.step, trigger))
        if target is None:
            raise LocalProtocolError(f"pairing cannot take {trigger!r} at step {self.step}")
        self.step = target


@dataclass(slots=True)
class _Tx:
    pos_ref_id: str
    tx_type: m.TxType
    response_event: str
    request: m.TransactionRequest | None
    phase: TxPhase = TxPhase.UNSENT
    request_id: str = ""
    started_at: float = 0.0
    last_state_request_at: float = 0.0
    recovering: bool = False
    cancelling: bool = False
    cancel_at: float = 0.0
    last_gt_response_at: float | None = None
    gt_request_id: str | None = None
    monitor_anchor: float = 0.0
    signature_from_gt: bool = False

    def move(self, target: TxPhase) -> None:
        if target not in _TX_MOVES[self.phase]:
            raise LocalProtocolError(f"transaction cannot move from {self.phase} to {target}")
        self.phase = target


_MAX_ROLL_SWAPS: Final = 4  # as the 2.9.2 fall-back (§13.6)
_GT_KEEP_WAITING: Final = ("TRANSACTION_IN_PROGRESS", "OPERATION_IN_PROGRESS")
_GT_DEFINITELY_FAILED: Final = frozenset(
    {"POS_REF_ID_NOT_FOUND", "INVALID_ARGUMENTS", "MISSING_ARGUMENTS"}
)


class PosSession:
    """One POS–terminal pairing, POS side. See the module docstring for its rules.

    Typical I/O shell loop::

        session.connection_made(now)            # socket open
        session.receive_text(frame, now)        # each frame in
        session.handle_timer(now)               # at session.next_deadline()
        for event in session.events_received(): ...   # persist / publish first
        for frame in session.data_to_send(): await ws.send(frame)
    """

    def __init__(
        self,
        *,
        pos_id: str,
        pos_info: PosInfo,
        secrets: Secrets | None = None,
        generation: Generation = Generation.V29,
        timings: Timings = DEFAULT_TIMINGS,
        rng: random.Random | None = None,
        private_key_factory: Callable[[], int] = generate_private_key,
        previous_secrets: Secrets | None = None,
        request_id_start: int | None = None,
    ) -> None:
        if not is_valid_pos_id(pos_id):
            raise InvalidRequest("POS id must be 1 to 16 ASCII letters or digits")
        self.pos_id = pos_id
        self.pos_info = pos_info
        self.timings = timings
        self._rng = rng or random.Random()  # pos_counter start only; not security relevant
        self._private_key_factory = private_key_factory
        self._stamp = MessageStamp(pos_id=pos_id, generation=generation, secrets=secrets)
        # Unpredictable per session (see the module doc); tests pin it.
        self._ids = m.RequestIds(
            request_id_start if request_id_start is not None else _random_request_id_start()
        )
        self._events: list[PosSessionEvent] = []
        self._outbox: list[str] = []
        self._held: list[str] | None = None  # frames behind a key roll not yet persisted
        # The other key set of a key roll the terminal has not confirmed yet:
        # the pre-roll keys after a roll, or the new keys after falling back.
        self._previous_secrets: Secrets | None = previous_secrets if secrets else None
        self._roll_swaps = 0
        self.status = SpiStatus.PAIRED_CONNECTING if secrets else SpiStatus.UNPAIRED
        self.flow = SpiFlow.IDLE
        self.connected = False
        self.ready = False
        self.terminal_model: str | None = None
        self.terminal_serial_number: str | None = None
        self._has_set_pos_info = False
        self._pairing: _Pairing | None = None
        self._tx: _Tx | None = None
        self._lookups: dict[str, str] = {}  # message id of a caller's GT -> pos_ref_id
        self._glt_ids: set[str] = set()
        # ping state (§5.4)
        self._last_ping_id: str | None = None
        self._last_ping_answered = False
        self._last_ping_at: float | None = None
        self._pong_deadline: float | None = None
        self._next_ping_at: float | None = None
        self._missed_pongs = 0
        self._pinging = False
        self._first_pong_seen = False
        self._ready_requests_skipped = False

    # ------------------------------------------------------------------
    # Outputs
    # ------------------------------------------------------------------

    @property
    def secrets(self) -> Secrets | None:
        """The keys in use (None while unpaired)."""
        return self._stamp.secrets

    @property
    def wants_connection(self) -> bool:
        """Whether the I/O shell should keep a connection open (paired, or pairing)."""
        if self.status is not SpiStatus.UNPAIRED:
            return True
        return self._pairing is not None and self._pairing.step is not PairingStep.FINISHED

    @property
    def current_pos_ref_id(self) -> str | None:
        """The running transaction's ``pos_ref_id``, if any."""
        return self._tx.pos_ref_id if self._tx else None

    @property
    def current_tx_phase(self) -> TxPhase | None:
        """The running transaction's phase, if any."""
        return self._tx.phase if self._tx else None

    @property
    def pairing_code(self) -> str | None:
        """The confirmation code of a pairing in progress."""
        return self._pairing.code if self._pairing else None

    def events_received(self) -> list[PosSessionEvent]:
        """Events since the last call, oldest first. Handle them before sending data."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """Frames to write to the websocket, in order."""
        frames, self._outbox = self._outbox, []
        return frames

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called (None: no timer needed)."""
        candidates: list[float] = []
        if self.connected:
            if self._pong_deadline is not None:
                candidates.append(self._pong_deadline)
            elif self._next_ping_at is not None and self._pinging:
                candidates.append(self._next_ping_at)
        if self._tx is not None and self._tx.phase is not TxPhase.UNSENT:
            candidates.append(self._next_monitor_tick(self._tx))
        return min(candidates) if candidates else None

    # ------------------------------------------------------------------
    # Connection lifecycle (called by the I/O shell)
    # ------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """The websocket is open (§5.2)."""
        if self.connected:
            raise LocalProtocolError("connection_made while already connected")
        self.connected = True
        self.ready = False
        self._stamp.reset_connection(self._rng.randint(100, 99999))
        self._reset_ping()
        if self._pairing is not None and self._pairing.step is PairingStep.WAITING_FOR_CONNECTION:
            self._pairing.move("connected")
            self._pairing.request_id = self._ids.next(m.PairRequest.id_prefix)
            self._queue(self._pairing.request_id, m.PairRequest(), now)
            self._pairing_progress("Requesting to pair…")
        elif self.status is not SpiStatus.UNPAIRED:
            self._start_pinging(now)

    def connection_lost(self, now: float) -> None:
        """The websocket closed, for whatever reason (§5.5)."""
        if not self.connected:
            return
        self.connected = False
        self.ready = False
        self._reset_ping()
        self._stamp.reset_connection(self._rng.randint(100, 99999))
        self._lookups.clear()
        self._glt_ids.clear()
        if self._pairing is not None and self._pairing.step is not PairingStep.FINISHED:
            self._pairing.retries += 1
            if self._pairing.retries > self.timings.pairing_retries:
                self._fail_pairing("Connection lost during pairing; gave up after retries.")
                return
            self._stamp.secrets = None
            self._pairing.move("connection_lost")
            self._pairing.code = None
            self._pairing_progress("Connection lost; retrying pairing.")
            return
        if self.status is SpiStatus.PAIRED_CONNECTED:
            self._set_status(SpiStatus.PAIRED_CONNECTING)
        tx = self._tx
        if tx is not None and tx.phase is not TxPhase.UNSENT:
            tx.recovering = True
            if tx.tx_type is m.TxType.REVERSAL:
                # §7.15: a reversal cannot be recovered.
                self._complete(tx, Outcome.FAILED, "Connection lost during a reversal.", None, now)
            else:
                tx.gt_request_id = None

    def receive_text(self, text: str | bytes, now: float) -> None:
        """One frame from the terminal. Never raises for bad input: see :class:`FrameRejected`."""
        if not self.connected:
            return
        got = self._decode(text)
        if isinstance(got, RejectedFrame):
            self._events.append(FrameRejected(reason=got.reason, detail=got.detail))
            return
        message = got.message
        if not got.encrypted and not self._plaintext_allowed(message):
            self._events.append(
                FrameRejected(
                    reason=RejectReason.INVALID_SIGNATURE,
                    detail=f"plaintext {_short(message.event)!r} while keys are held",
                )
            )
            return
        try:
            parsed = m.parse_terminal_message(message)
        except Exception as exc:  # the parser raises only typed errors, but a
            # terminal must never be able to end the lane through a parser slip.
            self._events.append(
                FrameRejected(reason=RejectReason.BAD_MESSAGE, detail=f"{message.event}: {exc}")
            )
            return
        self._dispatch(parsed, message, got, now)

    def handle_timer(self, now: float) -> None:
        """Run what is due: pings, pong timeouts, the transaction monitor (§5.4, §8.4)."""
        if self.connected and self._pinging:
            if self._pong_deadline is not None and now >= self._pong_deadline:
                self._pong_deadline = None
                if self._swap_unconfirmed_keys():
                    # §13.6: maybe the terminal never got our roll reply (or we
                    # never got its roll): try the other keys before giving up.
                    self._send_ping(now)
                    return
                self._missed_pongs += 1
                if self._missed_pongs >= self.timings.missed_pongs_before_disconnect:
                    self._events.append(CloseConnection(reason="missed pongs"))
                    self._pinging = False
                else:
                    self._send_ping(now)
            elif (
                self._pong_deadline is None
                and self._next_ping_at is not None
                and now >= self._next_ping_at
            ):
                self._send_ping(now)
        tx = self._tx
        if tx is not None and tx.phase is not TxPhase.UNSENT:
            while self._tx is tx and now >= self._next_monitor_tick(tx):
                tick = self._next_monitor_tick(tx)
                tx.monitor_anchor = tick
                self._monitor(tx, tick)

    # ------------------------------------------------------------------
    # Pairing (§4)
    # ------------------------------------------------------------------

    def pair(self, now: float) -> None:
        """Start pairing. Needs Unpaired and Idle; connect (or stay connected) to proceed."""
        if self.status is not SpiStatus.UNPAIRED:
            raise LocalProtocolError("Already paired")
        if self.flow is not SpiFlow.IDLE:
            raise LocalProtocolError("Not Idle")
        self._pairing = _Pairing()
        self._set_flow(SpiFlow.PAIRING)
        if self.connected:
            self._pairing.move("connected")
            self._pairing.request_id = self._ids.next(m.PairRequest.id_prefix)
            self._queue(self._pairing.request_id, m.PairRequest(), now)
            self._pairing_progress("Requesting to pair…")
        else:
            self._pairing_progress("Connecting to the terminal…")

    def pair_confirm(self, now: float) -> None:
        """The POS operator says the code matches (§4.4)."""
        p = self._pairing
        if p is None or p.step is not PairingStep.CONFIRMING or not p.awaiting_pos:
            raise LocalProtocolError("Not waiting for a pairing confirmation")
        p.awaiting_pos = False
        if p.awaiting_terminal:
            self._pairing_progress("Confirm the code on the terminal.")
        else:
            self._succeed_pairing(now)

    def pair_cancel(self, now: float, *, message: str = "Pairing cancelled.") -> None:
        """Abandon a pairing in progress (§4.5); ``message`` says why, for the operator."""
        p = self._pairing
        if p is None or p.step is PairingStep.FINISHED:
            raise LocalProtocolError("Not pairing")
        if p.awaiting_pos and not p.awaiting_terminal and self.connected:
            # The terminal already holds the keys: make it forget them.
            self._queue(self._ids.next(m.DropKeysRequest.id_prefix), m.DropKeysRequest(), now)
        self._fail_pairing(message, cancelled=True)

    def unpair(self, now: float) -> None:
        """Forget the pairing on both sides (§4.6). Only while Idle."""
        if self.status is SpiStatus.UNPAIRED:
            raise LocalProtocolError("Not Paired")
        if self.flow is not SpiFlow.IDLE:
            raise LocalProtocolError("Not Idle")
        if self.connected:
            self._queue(self._ids.next(m.DropKeysRequest.id_prefix), m.DropKeysRequest(), now)
        self._forget_pairing("unpaired")

    def secrets_persisted(self) -> None:
        """The caller stored the rolled keys: release the reply that uses them (§5.7)."""
        if self._held is not None:
            self._outbox.extend(self._held)
            self._held = None

    # ------------------------------------------------------------------
    # Transactions (§7)
    # ------------------------------------------------------------------

    def start_transaction(self, request: m.TransactionRequest, now: float) -> None:
        """Begin a transaction. Sent now when ready, else at the next ready-to-transact."""
        if self.status is SpiStatus.UNPAIRED:
            raise LocalProtocolError("Not Paired")
        if self.flow is not SpiFlow.IDLE:
            raise LocalProtocolError("Not Idle")
        if self.terminal_model in PRINTERLESS_MODELS:
            request = _without_printing(request)
        tx = _Tx(
            pos_ref_id=request.pos_ref_id,
            tx_type=request.tx_type,
            response_event=str(request.response_event),
            request=request,
            started_at=now,
        )
        self._tx = tx
        self._set_flow(SpiFlow.TRANSACTION)
        if self.ready:
            self._send_request(tx, now)

    def recover(self, pos_ref_id: str, tx_type: m.TxType, now: float) -> None:
        """Resume a transaction whose request may have been sent before a restart (§7.12.5).

        The request is never sent again: the session asks the terminal what
        happened (``get_transaction``) as soon as the link is ready.
        """
        if self.status is SpiStatus.UNPAIRED:
            raise LocalProtocolError("Not Paired")
        if self.flow is not SpiFlow.IDLE:
            raise LocalProtocolError("Not Idle")
        request_cls = m.TRANSACTION_REQUESTS[tx_type]
        tx = _Tx(
            pos_ref_id=pos_ref_id,
            tx_type=tx_type,
            response_event=str(request_cls.response_event),
            request=None,
            phase=TxPhase.SENT,
            started_at=now,
            last_state_request_at=now,
            monitor_anchor=now,
            recovering=True,
        )
        self._tx = tx
        self._set_flow(SpiFlow.TRANSACTION)
        if tx_type is m.TxType.REVERSAL:
            self._complete(tx, Outcome.FAILED, "A reversal cannot be recovered.", None, now)
            return
        if self.ready:
            self._send_gt(tx, now)

    def cancel_transaction(self, now: float) -> None:
        """Ask the terminal to cancel (§7.6). Unsent transactions fail locally at once."""
        tx = self._tx
        if tx is None:
            raise LocalProtocolError("asked to cancel but not in a transaction")
        if tx.phase is TxPhase.UNSENT:
            self._complete(tx, Outcome.FAILED, "Cancelled before the request was sent.", None, now)
            return
        if tx.cancelling:
            return
        tx.cancelling = True
        tx.cancel_at = now
        tx.last_gt_response_at = None
        if self.connected:
            self._queue(
                self._ids.next(m.CancelTransactionRequest.id_prefix),
                m.CancelTransactionRequest(),
                now,
            )

    def accept_signature(self, accepted: bool, now: float) -> None:
        """Answer ``signature_required`` (§7.7)."""
        tx = self._tx
        if tx is None or tx.phase is not TxPhase.AWAITING_SIGNATURE:
            raise LocalProtocolError("asked to accept signature but was not waiting for one")
        if not self.ready:
            # The answer would be lost; after the reconnect get_transaction
            # tells whether the terminal still waits for it.
            raise LocalProtocolError("Not connected to the terminal: answer once it reconnects")
        request: m.SignatureAcceptRequest | m.SignatureDeclineRequest
        if accepted:
            request = m.SignatureAcceptRequest(pos_ref_id=tx.pos_ref_id)
        else:
            request = m.SignatureDeclineRequest(pos_ref_id=tx.pos_ref_id)
        self._queue(self._ids.next(request.id_prefix), request, now)
        tx.move(TxPhase.SENT)

    def submit_auth_code(self, auth_code: str, now: float) -> None:
        """Answer ``authorisation_code_required`` (§7.8): exactly 6 characters."""
        tx = self._tx
        if tx is None or tx.phase is not TxPhase.AWAITING_AUTH_CODE:
            raise LocalProtocolError("Was not waiting for one.")
        if not self.ready:
            raise LocalProtocolError("Not connected to the terminal: answer once it reconnects")
        request = m.AuthCodeAdviceRequest(pos_ref_id=tx.pos_ref_id, auth_code=auth_code)
        self._queue(self._ids.next(request.id_prefix), request, now)
        tx.move(TxPhase.SENT)

    # ------------------------------------------------------------------
    # Requests outside the transaction flow
    # ------------------------------------------------------------------

    def lookup_transaction(self, pos_ref_id: str, now: float) -> str:
        """Ask the terminal about a recent transaction (§7.10).

        The answer arrives as :class:`TransactionLookupResult`.
        """
        self._require_ready()
        request = m.GetTransactionRequest(pos_ref_id=pos_ref_id)
        message_id = self._ids.next(request.id_prefix)
        self._lookups[message_id] = pos_ref_id
        self._queue(message_id, request, now)
        return message_id

    def lookup_last_transaction(self, now: float) -> str:
        """Ask for the terminal's last transaction (§7.11).

        The answer arrives as :class:`LastTransactionResult`.
        """
        self._require_ready()
        request = m.GetLastTransactionRequest()
        message_id = self._ids.next(request.id_prefix)
        self._glt_ids.add(message_id)
        self._queue(message_id, request, now)
        return message_id

    def get_terminal_status(self, now: float) -> str:
        """§7.18."""
        return self._send_simple(m.GetTerminalStatusRequest(), now)

    def get_terminal_configuration(self, now: float) -> str:
        """§7.19."""
        return self._send_simple(m.GetTerminalConfigurationRequest(), now)

    def print_receipt(self, key: str, payload: str, now: float) -> str:
        """§7.20."""
        return self._send_simple(m.PrintRequest(key=key, payload=payload), now)

    # ------------------------------------------------------------------
    # Internals: sending
    # ------------------------------------------------------------------

    def _require_ready(self) -> None:
        if self.status is SpiStatus.UNPAIRED:
            raise LocalProtocolError("Not Paired")
        if not self.ready:
            raise LocalProtocolError("Not connected to the terminal")

    def _send_simple(self, request: m.Request, now: float) -> str:
        self._require_ready()
        message_id = self._ids.next(request.id_prefix)
        self._queue(message_id, request, now)
        return message_id

    def _queue(self, message_id: str, request: m.Request, now: float) -> None:
        if not self.connected:
            return
        frame = self._stamp.encode(message_id, str(request.event), request.to_data(), now=now)
        self._push(frame)

    def _queue_raw(self, message_id: str, event: str, data: Any, now: float) -> None:
        if not self.connected:
            return
        self._push(self._stamp.encode(message_id, event, data, now=now))

    def _push(self, frame: str) -> None:
        if self._held is not None:
            self._held.append(frame)
        else:
            self._outbox.append(frame)

    def _send_request(self, tx: _Tx, now: float) -> None:
        assert tx.request is not None
        tx.request_id = self._ids.next(tx.request.id_prefix)
        self._queue(tx.request_id, tx.request, now)
        tx.move(TxPhase.SENT)
        tx.last_state_request_at = now
        tx.monitor_anchor = now
        self._events.append(
            TransactionRequestSent(
                pos_ref_id=tx.pos_ref_id, tx_type=tx.tx_type, message_id=tx.request_id
            )
        )

    def _send_gt(self, tx: _Tx, now: float) -> None:
        request = m.GetTransactionRequest(pos_ref_id=tx.pos_ref_id)
        tx.gt_request_id = self._ids.next(request.id_prefix)
        tx.last_state_request_at = now
        self._queue(tx.gt_request_id, request, now)

    # ------------------------------------------------------------------
    # Internals: pings (§5.4)
    # ------------------------------------------------------------------

    def _reset_ping(self) -> None:
        self._first_pong_seen = False
        self._pinging = False
        self._last_ping_id = None
        self._last_ping_answered = False
        self._last_ping_at = None
        self._pong_deadline = None
        self._next_ping_at = None
        self._missed_pongs = 0

    def _swap_unconfirmed_keys(self) -> bool:
        if self._previous_secrets is None or self._stamp.secrets is None:
            return False
        if self._roll_swaps >= _MAX_ROLL_SWAPS:
            self._previous_secrets = None
            return False
        self._roll_swaps += 1
        self._stamp.secrets, self._previous_secrets = self._previous_secrets, self._stamp.secrets
        self._events.append(
            SecretsChanged(
                secrets=self._stamp.secrets, previous=self._previous_secrets, reason="roll_fallback"
            )
        )
        return True

    def _start_pinging(self, now: float) -> None:
        self._pinging = True
        self._send_ping(now)

    def _send_ping(self, now: float) -> None:
        self._last_ping_id = self._ids.next(m.PingRequest.id_prefix)
        self._last_ping_answered = False
        self._last_ping_at = now
        self._pong_deadline = now + self.timings.pong_timeout_s
        self._next_ping_at = now + self.timings.ping_interval_s
        self._queue(self._last_ping_id, m.PingRequest(), now)

    def _on_pong(self, message: Message, now: float) -> None:
        if message.id != self._last_ping_id:
            self._events.append(IgnoredMessage(event="pong", reason="not the latest ping's id"))
            return
        if self._last_ping_answered:
            self._events.append(IgnoredMessage(event="pong", reason="that ping was answered"))
            return
        self._last_ping_answered = True
        self._missed_pongs = 0
        self._pong_deadline = None
        if not self._first_pong_seen:
            # §5.6: the first pong of a connection gives its connection id.
            self._first_pong_seen = True
            self._stamp.conn_id = message.conn_id
        if not self.ready and self.status is not SpiStatus.UNPAIRED:
            self._ready_to_transact(now)  # §5.3

    def _ready_to_transact(self, now: float) -> None:
        self.ready = True
        self._set_status(SpiStatus.PAIRED_CONNECTED)
        tx = self._tx
        if tx is not None:
            self._ready_requests_skipped = True
            if tx.phase is TxPhase.UNSENT:
                self._send_request(tx, now)
            elif tx.tx_type in _NO_POS_REF_ID_TYPES:
                # §7.14: a settlement has no pos_ref_id, so get_transaction
                # cannot find it: what happened while we were away is unknown.
                self._complete(
                    tx,
                    Outcome.UNKNOWN,
                    "Connection lost during the settlement; run a settlement enquiry.",
                    None,
                    now,
                )
            else:
                self._send_gt(tx, now)
                if tx.cancelling:
                    # The cancel asked for while disconnected goes out now.
                    self._queue(
                        self._ids.next(m.CancelTransactionRequest.id_prefix),
                        m.CancelTransactionRequest(),
                        now,
                    )
            return
        if self.flow is SpiFlow.IDLE:
            self._send_ready_requests(now)

    def _send_ready_requests(self, now: float) -> None:
        if not self._has_set_pos_info:
            info = self.pos_info
            request = m.SetPosInfoRequest(
                pos_version=info.pos_version,
                pos_vendor_id=info.pos_vendor_id,
                library_language=info.library_language,
                library_version=info.library_version,
                spice_version=info.spice_version,
                device_system=info.device_system,
            )
            self._queue(self._ids.next(request.id_prefix), request, now)
        request_cfg = m.GetTerminalConfigurationRequest()
        self._queue(self._ids.next(request_cfg.id_prefix), request_cfg, now)

    # ------------------------------------------------------------------
    # Internals: receiving
    # ------------------------------------------------------------------

    def _decode(self, text: str | bytes) -> Received | RejectedFrame:
        got = decode_frame(text, self._stamp.secrets, strict_hmac_case=True)
        if (
            isinstance(got, RejectedFrame)
            and got.reason is RejectReason.INVALID_SIGNATURE
            and self._previous_secrets is not None
        ):
            # §13.6: right after a roll the terminal may still sign with the old keys.
            old = decode_frame(text, self._previous_secrets, strict_hmac_case=True)
            if isinstance(old, Received):
                return old
        elif isinstance(got, Received) and got.encrypted and self._previous_secrets is not None:
            # The keys in use verified: the roll is settled, forget the other set.
            self._previous_secrets = None
            self._roll_swaps = 0
            self._events.append(SecretsChanged(secrets=self._stamp.secrets, reason="roll_settled"))
        return got

    def _plaintext_allowed(self, message: Message) -> bool:
        """Whether an unauthenticated frame may be acted on (module doc, §2.1-2.2, §4.3)."""
        if self._stamp.secrets is None and self._previous_secrets is None:
            return True  # no keys yet: key_request, or nothing that can do harm
        p = self._pairing
        return (
            p is not None
            and p.step is PairingStep.CONFIRMING
            and message.event == str(m.Event.PAIR_RESPONSE)
        )

    def _dispatch(
        self, parsed: m.TerminalMessage, message: Message, got: Received, now: float
    ) -> None:
        match parsed:
            case m.KeyRequest():
                self._on_key_request(parsed, message, now)
            case m.KeyCheck():
                self._on_key_check(got)
            case m.PairResponse():
                self._on_pair_response(parsed, now)
            case m.DropKeys():
                if self.status is not SpiStatus.UNPAIRED:
                    self._forget_pairing("dropped by the terminal")
            case m.Ping():
                self._queue_raw(message.id, str(m.Event.PONG), None, now)
            case m.Pong():
                self._on_pong(message, now)
            case m.RequestUseNextKeys():
                self._on_request_use_next_keys(message, now)
            case m.TxnUpdate():
                if self._tx is not None:
                    self._events.append(
                        TransactionUpdate(
                            pos_ref_id=self._tx.pos_ref_id,
                            display_message_text=parsed.display_message_text,
                            display_message_code=parsed.display_message_code,
                        )
                    )
            case m.SignatureRequired():
                self._on_signature_required(parsed)
            case m.AuthCodeRequired():
                self._on_auth_code_required(parsed)
            case m.CancelResponse():
                self._on_cancel_response(parsed)
            case m.GetTransactionResponse():
                self._on_get_transaction_response(parsed, message, now)
            case m.SettlementResponse():
                self._on_transaction_response(message.event, message.id, parsed, None, now)
            case m.TransactionResponse():
                if message.event == str(m.Event.LAST_TRANSACTION) and message.id in self._glt_ids:
                    self._glt_ids.discard(message.id)
                    self._events.append(LastTransactionResult(response=parsed))
                else:
                    self._on_transaction_response(
                        message.event, message.id, parsed, parsed.pos_ref_id, now
                    )
            case m.SetPosInfoResponse():
                if parsed.success:
                    self._has_set_pos_info = True
                self._events.append(TerminalAnswer(answer=parsed))
            case m.TerminalConfiguration():
                if parsed.success is not False:
                    self.terminal_model = parsed.terminal_model or self.terminal_model
                    self.terminal_serial_number = (
                        parsed.serial_number or self.terminal_serial_number
                    )
                self._events.append(TerminalAnswer(answer=parsed))
            case m.TerminalStatus() | m.BatteryLevelChanged() | m.PrintResponse():
                self._events.append(TerminalAnswer(answer=parsed))
            case m.PosSpiToken():
                self._events.append(PosSpiTokenReceived(token=parsed.token))
            case m.ErrorMessage():
                self._on_error(parsed, now)
            case m.PayAtTableMessage():
                if message.event == str(m.Event.GET_TABLE_CONFIG):
                    # §13.14: always answer; pay at table is off in this lane.
                    self._queue_raw(
                        message.id,
                        str(m.Event.SET_TABLE_CONFIG),
                        m.SetTableConfigRequest().to_data(),
                        now,
                    )
                else:
                    self._events.append(
                        IgnoredMessage(event=message.event, reason="pay at table is not enabled")
                    )
            case _:
                self._events.append(IgnoredMessage(event=message.event, reason="not handled"))

    def _on_key_request(self, parsed: m.KeyRequest, message: Message, now: float) -> None:
        p = self._pairing
        if p is None or p.step is not PairingStep.WAITING_FOR_KEY_REQUEST:
            self._events.append(IgnoredMessage(event="key_request", reason="not pairing"))
            return
        try:
            their_enc = parse_public_key(parsed.enc_a)
            their_hmac = parse_public_key(parsed.hmac_a)
        except CryptoError as exc:
            # §13.5 and docs/security.md: a bad key exchange is not retried
            # quietly; the operator sees why the pairing failed.
            self._fail_pairing(f"Pairing failed: the terminal's key_request is invalid ({exc}).")
            return
        x_enc, x_hmac = self._private_key_factory(), self._private_key_factory()
        secrets = Secrets(
            enc_key=dh_secret_to_key(dh_shared_secret(their_enc, x_enc)),
            hmac_key=dh_secret_to_key(dh_shared_secret(their_hmac, x_hmac)),
        )
        data = {
            "enc": {"B": int_to_hex(dh_public_key(x_enc))},
            "hmac": {"B": int_to_hex(dh_public_key(x_hmac))},
        }
        # key_response goes in clear with the key_request's id (§4.3), then the
        # new keys go on the stamp: everything after it is encrypted.
        self._queue_raw(message.id, str(m.Event.KEY_RESPONSE), data, now)
        self._stamp.secrets = secrets
        p.move("key_request")
        self._pairing_progress("Negotiating keys…")

    def _on_key_check(self, got: Received) -> None:
        p = self._pairing
        if p is None or p.step is not PairingStep.WAITING_FOR_KEY_CHECK or got.hmac is None:
            self._events.append(IgnoredMessage(event="key_check", reason="not pairing"))
            return
        p.move("key_check")
        p.code = confirmation_code(got.hmac)
        p.awaiting_pos = True
        p.awaiting_terminal = True
        self._pairing_progress("Confirm that the code matches the terminal.")

    def _on_pair_response(self, parsed: m.PairResponse, now: float) -> None:
        p = self._pairing
        if p is None or p.step is PairingStep.FINISHED:
            self._events.append(IgnoredMessage(event="pair_response", reason="not pairing"))
            return
        if not parsed.success:
            self._fail_pairing("The terminal rejected the pairing.")
            return
        if p.step is not PairingStep.CONFIRMING:
            self._events.append(IgnoredMessage(event="pair_response", reason="before key_check"))
            return
        p.awaiting_terminal = False
        # §4.4: ping right away; the terminal drops a silent fresh pairing within ~5 s.
        if not self._pinging:
            self._start_pinging(now)
        if p.awaiting_pos:
            self._pairing_progress("The terminal confirmed; confirm the code on the POS.")
        else:
            self._succeed_pairing(now)

    def _on_request_use_next_keys(self, message: Message, now: float) -> None:
        current = self._stamp.secrets
        if current is None:
            return
        new = current.rolled()
        self._previous_secrets = current
        self._roll_swaps = 0
        self._stamp.secrets = new
        self._events.append(SecretsChanged(secrets=new, previous=current, reason="rolled"))
        if self._held is None:
            self._held = []
        self._queue_raw(
            message.id, str(m.Event.RESPONSE_USE_NEXT_KEYS), {"status": "confirmed"}, now
        )

    def _matches_tx(self, event: str, pos_ref_id: str | None) -> _Tx | None:
        tx = self._tx
        if tx is None or tx.phase is TxPhase.COMPLETED:
            self._events.append(IgnoredMessage(event=event, reason="no transaction in progress"))
            return None
        if pos_ref_id is not None and pos_ref_id != tx.pos_ref_id:
            self._events.append(
                IgnoredMessage(event=event, reason="pos_ref_id does not match the transaction")
            )
            return None
        return tx

    def _on_transaction_response(
        self,
        event: str,
        message_id: str,
        parsed: m.TransactionResponse | m.SettlementResponse,
        pos_ref_id: str | None,
        now: float,
    ) -> None:
        tx = self._matches_tx(event, pos_ref_id)
        if tx is None:
            return
        if event != tx.response_event:
            self._events.append(IgnoredMessage(event=event, reason=f"expected {tx.response_event}"))
            return
        if tx.tx_type in _NO_POS_REF_ID_TYPES and message_id != tx.request_id:
            # No pos_ref_id to bind it (§7.14): only the echo of our request's
            # id ties it to this request, so a replayed one cannot close it.
            self._events.append(IgnoredMessage(event=event, reason="id is not this request's id"))
            return
        if (
            isinstance(parsed, m.TransactionResponse)
            and parsed.pos_ref_id is None
            and (tx.tx_type not in _NO_POS_REF_ID_TYPES)
        ):
            # §13.9: 2.9.13 ignores a response without pos_ref_id; GT will find it.
            self._events.append(IgnoredMessage(event=event, reason="response has no pos_ref_id"))
            return
        outcome = _outcome_of(parsed.success)
        self._complete(tx, outcome, _describe(parsed, outcome), parsed, now)

    def _on_signature_required(self, parsed: m.SignatureRequired) -> None:
        tx = self._matches_tx("signature_required", parsed.pos_ref_id)
        if tx is None or tx.phase not in (TxPhase.SENT, TxPhase.AWAITING_SIGNATURE):
            return
        if tx.phase is TxPhase.SENT:
            tx.move(TxPhase.AWAITING_SIGNATURE)
        tx.signature_from_gt = False
        self._events.append(
            SignatureRequired(
                pos_ref_id=tx.pos_ref_id, merchant_receipt=parsed.merchant_receipt or ""
            )
        )

    def _on_auth_code_required(self, parsed: m.AuthCodeRequired) -> None:
        tx = self._matches_tx("authorisation_code_required", parsed.pos_ref_id)
        if tx is None or tx.phase is not TxPhase.SENT:
            return
        tx.move(TxPhase.AWAITING_AUTH_CODE)
        self._events.append(
            AuthCodeRequired(
                pos_ref_id=tx.pos_ref_id,
                auth_centre_phone_number=parsed.auth_centre_phone_number or "",
                merchant_id=parsed.merchant_id or "",
            )
        )

    def _on_cancel_response(self, parsed: m.CancelResponse) -> None:
        tx = self._matches_tx("cancel_response", parsed.pos_ref_id)
        if tx is None or not tx.cancelling:
            return
        if parsed.success:
            return  # §7.6: the transaction's own (failed) response closes it
        tx.cancelling = False
        self._events.append(
            CancelFailed(
                pos_ref_id=tx.pos_ref_id,
                error_reason=parsed.error_reason or "",
                error_detail=parsed.error_detail or "",
            )
        )

    def _on_error(self, parsed: m.ErrorMessage, now: float) -> None:
        self._events.append(
            TerminalErrorReceived(
                error_reason=parsed.error_reason or "", error_detail=parsed.error_detail or ""
            )
        )
        tx = self._tx
        if (
            tx is not None
            and tx.cancelling
            and (parsed.error_reason or "").startswith("NO_TRANSACTION")
            and self.ready
        ):
            # §7.6: nothing to cancel, so the outcome is already decided: ask for it.
            self._send_gt(tx, now)

    def _on_get_transaction_response(
        self, parsed: m.GetTransactionResponse, message: Message, now: float
    ) -> None:
        if message.id in self._lookups:
            pos_ref_id = self._lookups[message.id]
            if not _names(parsed, pos_ref_id):
                self._events.append(
                    IgnoredMessage(event=message.event, reason="names another pos_ref_id")
                )
                return
            del self._lookups[message.id]
            self._events.append(TransactionLookupResult(pos_ref_id=pos_ref_id, response=parsed))
            return
        tx = self._tx
        if tx is None or tx.gt_request_id is None or message.id != tx.gt_request_id:
            self._events.append(
                IgnoredMessage(event=message.event, reason="not the latest get_transaction")
            )
            return
        if not _names(parsed, tx.pos_ref_id):
            # A signed answer about another transaction (recorded earlier, or
            # a terminal slip) must not decide this one: keep recovering.
            self._events.append(
                IgnoredMessage(
                    event=message.event, reason="does not name the transaction's pos_ref_id"
                )
            )
            return
        tx.gt_request_id = None
        if tx.cancelling:
            tx.last_gt_response_at = now  # §13.7: restarts the 25 s
        reason = parsed.error_reason or ""
        if parsed.success is True:
            if parsed.tx is None:
                return  # R10: keep waiting
            outcome = _outcome_of(parsed.tx.success)
            self._complete(tx, outcome, _describe(parsed.tx, outcome), parsed.tx, now)
            return
        if reason.startswith("TRANSACTION_IN_PROGRESS_AWAITING_SIGNATURE"):
            if tx.phase is TxPhase.SENT:  # R1
                tx.move(TxPhase.AWAITING_SIGNATURE)
                tx.signature_from_gt = True
                self._events.append(
                    SignatureRequired(
                        pos_ref_id=tx.pos_ref_id,
                        merchant_receipt="MISSING RECEIPT\r\nDECLINE AND TRY AGAIN.",
                        placeholder=True,
                    )
                )
            return  # R2
        if reason.startswith("TRANSACTION_IN_PROGRESS_AWAITING_PHONE_AUTH_CODE"):
            if tx.phase is TxPhase.SENT:  # R3
                tx.move(TxPhase.AWAITING_AUTH_CODE)
                self._events.append(
                    AuthCodeRequired(
                        pos_ref_id=tx.pos_ref_id,
                        auth_centre_phone_number="UNKNOWN",
                        merchant_id="UNKNOWN",
                        placeholder=True,
                    )
                )
            return
        if reason.startswith(_GT_KEEP_WAITING):
            return  # R4, R8
        if reason in _GT_DEFINITELY_FAILED:
            # R5–R7: the terminal has no such transaction: it never ran.
            self._complete(
                tx, Outcome.FAILED, f"Terminal has no record of it ({reason}).", None, now
            )
            return
        # R9: the lookup failed; the money's fate is not known (deviation, see module doc).
        self._complete(
            tx,
            Outcome.UNKNOWN,
            f"Terminal could not report the outcome ({reason or 'no reason'}); check the terminal.",
            None,
            now,
        )

    # ------------------------------------------------------------------
    # Internals: the transaction monitor (§8.4, §13.7)
    # ------------------------------------------------------------------

    def _next_monitor_tick(self, tx: _Tx) -> float:
        return tx.monitor_anchor + self.timings.tx_monitor_interval_s

    def _monitor(self, tx: _Tx, now: float) -> None:
        t = self.timings
        if tx.cancelling:
            waited_disconnected = (
                not self.connected and now - tx.cancel_at > t.cancel_wait_disconnected_s
            )
            since = max(tx.cancel_at, tx.last_gt_response_at or tx.cancel_at)
            if waited_disconnected or now - since > t.cancel_wait_connected_s:
                self._complete(
                    tx,
                    Outcome.UNKNOWN,
                    "Waited long enough for the cancel result; check the terminal.",
                    None,
                    now,
                )
                return
        if (
            now - tx.last_state_request_at > t.get_transaction_interval_s
            and tx.tx_type not in _NO_POS_REF_ID_TYPES
        ):
            # §7.12.3: ask again; while the link is down the ask simply cannot go out.
            if self.ready:
                self._send_gt(tx, now)
            else:
                tx.last_state_request_at = now

    # ------------------------------------------------------------------
    # Internals: state changes
    # ------------------------------------------------------------------

    def _complete(
        self,
        tx: _Tx,
        outcome: Outcome,
        message: str,
        response: m.TransactionResponse | m.SettlementResponse | None,
        now: float,
    ) -> None:
        tx.move(TxPhase.COMPLETED)
        self._tx = None
        self._events.append(
            TransactionCompleted(
                pos_ref_id=tx.pos_ref_id,
                tx_type=tx.tx_type,
                outcome=outcome,
                message=message,
                recovered=tx.recovering,
                response=response,
            )
        )
        self._set_flow(SpiFlow.IDLE)
        if self._ready_requests_skipped and self.ready:
            # The link became ready mid-transaction: send what §5.3 sends when idle.
            self._ready_requests_skipped = False
            self._send_ready_requests(now)

    def _set_status(self, status: SpiStatus) -> None:
        if status is not self.status:
            self.status = status
            self._events.append(StatusChanged(status=self.status, flow=self.flow))

    def _set_flow(self, flow: SpiFlow) -> None:
        if flow is not self.flow:
            self.flow = flow
            self._events.append(StatusChanged(status=self.status, flow=self.flow))

    def _pairing_progress(self, text: str) -> None:
        p = self._pairing
        assert p is not None
        self._events.append(
            PairingProgress(
                step=p.step,
                message=text,
                confirmation_code=p.code,
                awaiting_pos_confirmation=p.awaiting_pos,
                awaiting_terminal_confirmation=p.awaiting_terminal,
            )
        )

    def _succeed_pairing(self, now: float) -> None:
        p = self._pairing
        assert p is not None
        p.move("both_confirmed")
        self._pairing = None
        self._has_set_pos_info = False  # §13.12: send POS info again after a new pairing
        self._events.append(SecretsChanged(secrets=self._stamp.secrets, reason="paired"))
        self._events.append(PairingFinished(success=True, message="Paired."))
        self.flow = SpiFlow.IDLE
        self.status = SpiStatus.PAIRED_CONNECTED
        self._events.append(StatusChanged(status=self.status, flow=self.flow))
        if self.connected and not self._pinging:
            self._start_pinging(now)
        elif self.connected and self._first_pong_seen:
            # The terminal confirmed first and already answered a ping (§4.4).
            self._ready_to_transact(now)

    def _fail_pairing(self, text: str, *, cancelled: bool = False) -> None:
        self._pairing = None
        self._stamp.secrets = None
        self._events.append(PairingFinished(success=False, message=text, cancelled=cancelled))
        self._set_flow(SpiFlow.IDLE)
        if self.connected:
            # §13.8: a failed or cancelled pairing closes the socket for good.
            self._events.append(CloseConnection(reason="pairing failed"))
        self._reset_ping()

    def _forget_pairing(self, reason: str) -> None:
        self._stamp.secrets = None
        self._previous_secrets = None
        self._held = None
        self._has_set_pos_info = False
        self.ready = False
        self._reset_ping()
        self._events.append(SecretsChanged(secrets=None, reason=reason))
        self._set_status(SpiStatus.UNPAIRED)
        if self.connected:
            self._events.append(CloseConnection(reason=reason))


_NO_POS_REF_ID_TYPES: Final = frozenset(
    {m.TxType.SETTLE, m.TxType.SETTLEMENT_ENQUIRY, m.TxType.GET_LAST_TRANSACTION}
)

# Request ids start somewhere in [1, 2**31): unpredictable, and still short.
_REQUEST_ID_SPACE: Final = (1 << 31) - 1


def _random_request_id_start() -> int:
    return _csprng.randbelow(_REQUEST_ID_SPACE) + 1


def _names(parsed: m.GetTransactionResponse, pos_ref_id: str) -> bool:
    """Whether a get_transaction answer is about ``pos_ref_id`` and nothing else.

    Real answers carry it outside (errors) or inside ``tx`` (successes) or
    both (§7.10 fixtures); one that names no transaction, or another one
    anywhere, does not count.
    """
    named = [parsed.pos_ref_id, parsed.tx.pos_ref_id if parsed.tx is not None else None]
    given = [value for value in named if value is not None]
    return bool(given) and all(value == pos_ref_id for value in given)


def _short(text: str, limit: int = 40) -> str:
    """Peer-chosen text, cut short for a log line."""
    return text if len(text) <= limit else text[:limit] + "…"


def _outcome_of(success: bool | None) -> Outcome:
    if success is True:
        return Outcome.SUCCESS
    if success is False:
        return Outcome.FAILED
    return Outcome.UNKNOWN


def _describe(parsed: m.TransactionResponse | m.SettlementResponse, outcome: Outcome) -> str:
    text = parsed.host_response_text or ""
    if outcome is Outcome.FAILED and isinstance(parsed, m.TransactionResponse):
        text = text or parsed.error_detail or parsed.error_reason or ""
    return text or str(outcome)


def _without_printing(request: m.TransactionRequest) -> m.TransactionRequest:
    """Drop receipt options and print flags for a terminal without a printer (§7.1)."""
    changes: dict[str, object] = {}
    if hasattr(request, "options"):
        changes["options"] = m.ReceiptOptions()
    if hasattr(request, "config"):
        changes["config"] = m.PrintingConfig()
    return dataclasses.replace(request, **changes) if changes else request  # type: ignore[type-var]
