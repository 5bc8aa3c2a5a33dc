"""The POS side's link to its terminal: connection, pairing, keys and pings (PROTOCOL.md §4, §5).

:class:`PosLink` is the session core without transactions: it holds the
connection's state and the keys, stamps and queues outgoing frames, checks
incoming ones (link integrity, see :mod:`multipair.spi.pos`), answers pings
and key rolls, runs the pairing machine (:mod:`multipair.spi.pos.pairing`)
and keeps status and flow (§8.1, §8.2). It dispatches the messages that are
not about a transaction; :class:`~multipair.spi.pos.session.PosSession` adds
those and the transaction flow through the ``_transaction_*`` hooks and by
extending :meth:`PosLink._dispatch` and :meth:`PosLink._on_error`; pay at
table comes in through the ``_pay_at_table_*`` hooks
(:mod:`multipair.spi.pos.table`).
"""

from __future__ import annotations

import random
import secrets as _csprng
from collections.abc import Callable
from typing import Any, Final

from multipair.exceptions import CryptoError, InvalidRequest, LocalProtocolError
from multipair.spi import messages as m
from multipair.spi.address import DEFAULT_TIMINGS, Timings, is_valid_pos_id
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
from multipair.spi.pos.events import (
    CloseConnection,
    FrameRejected,
    IgnoredMessage,
    PairingFinished,
    PairingProgress,
    PosInfo,
    PosSessionEvent,
    PosSpiTokenReceived,
    SecretsChanged,
    StatusChanged,
    TerminalAnswer,
    TerminalErrorReceived,
)
from multipair.spi.pos.pairing import Pairing, PairingStep
from multipair.spi.states import SpiFlow, SpiStatus

__all__ = ["PosLink"]

_MAX_ROLL_SWAPS: Final = 4  # as the 2.9.2 fall-back (§13.6)


class PosLink:
    """The POS side of a pairing without transactions: link, pairing, keys, pings.

    Use :class:`~multipair.spi.pos.PosSession`, which adds transactions
    through the ``_transaction_*`` hooks at the end of this class.
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
        self._pairing: Pairing | None = None
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
        tx_tick = self._transaction_deadline()
        if tx_tick is not None:
            candidates.append(tx_tick)
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
        self._transaction_link_lost(now)

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
        self._transaction_timer(now)

    # ------------------------------------------------------------------
    # Pairing (§4)
    # ------------------------------------------------------------------

    def pair(self, now: float) -> None:
        """Start pairing. Needs Unpaired and Idle; connect (or stay connected) to proceed."""
        if self.status is not SpiStatus.UNPAIRED:
            raise LocalProtocolError("Already paired")
        if self.flow is not SpiFlow.IDLE:
            raise LocalProtocolError("Not Idle")
        self._pairing = Pairing()
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
        if self._transaction_ready(now):
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
        self._pay_at_table_ready(now)
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
            return True  # no keys yet: key_request, or nothing that can do harm (pay at
            # table, which could, refuses itself before pairing: spi/pos/table.py)
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
                self._pay_at_table_message(parsed, now)
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

    def _on_error(self, parsed: m.ErrorMessage, now: float) -> None:
        self._events.append(
            TerminalErrorReceived(
                error_reason=parsed.error_reason or "", error_detail=parsed.error_detail or ""
            )
        )

    # ------------------------------------------------------------------
    # Internals: state changes
    # ------------------------------------------------------------------

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

    # ------------------------------------------------------------------
    # Hooks for the transaction layer (PosSession); no transactions here
    # ------------------------------------------------------------------

    def _transaction_deadline(self) -> float | None:
        """When the transaction monitor next needs a tick (§8.4), if it runs."""
        return None

    def _transaction_timer(self, now: float) -> None:
        """Run the transaction monitor's due ticks (§8.4)."""

    def _transaction_link_lost(self, now: float) -> None:
        """The link went down while paired (§5.5): the transaction must recover."""

    def _transaction_ready(self, now: float) -> bool:
        """The link is ready (§5.3): resume a transaction; True if one took the moment."""
        return False

    # ------------------------------------------------------------------
    # Hooks for pay at table (PayAtTableLink); off here
    # ------------------------------------------------------------------

    def _pay_at_table_message(self, parsed: m.PayAtTableMessage, now: float) -> None:
        """A pay-at-table request (§7.23): only ``get_table_config`` is answered, "off" (§13.14)."""
        if parsed.event == str(m.Event.GET_TABLE_CONFIG):
            self._queue(parsed.id, m.SetTableConfigRequest(), now)
        else:
            self._events.append(
                IgnoredMessage(event=parsed.event, reason="pay at table is not enabled")
            )

    def _pay_at_table_ready(self, now: float) -> None:
        """Ready to transact while idle (§5.3): push the pay-at-table config if enabled."""


# Request ids start somewhere in [1, 2**31): unpredictable, and still short.
_REQUEST_ID_SPACE: Final = (1 << 31) - 1


def _random_request_id_start() -> int:
    return _csprng.randbelow(_REQUEST_ID_SPACE) + 1


def _short(text: str, limit: int = 40) -> str:
    """Peer-chosen text, cut short for a log line."""
    return text if len(text) <= limit else text[:limit] + "…"
