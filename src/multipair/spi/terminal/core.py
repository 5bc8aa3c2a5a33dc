"""The plumbing under the terminal session: fields, views, output queues, framing, timers.

:class:`TerminalCore` keeps what a terminal session holds (link, pairing
and transaction state, the frames and events waiting to be taken, the
timers) and knows how to frame and queue a message; the state setters go
through the tables of :mod:`multipair.spi.terminal.machines`.
:class:`~multipair.spi.terminal.session.Terminal` builds on it and decides
what to do with each input. No I/O, no clock (STYLE.md 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from multipair.exceptions import LocalProtocolError
from multipair.spi.common import PRINTERLESS_MODELS, RejectCause
from multipair.spi.crypto import Secrets
from multipair.spi.envelope import (
    Generation,
    JsonObject,
    Message,
    Received,
    encode_frame,
    format_local_datetime,
    terminal_inner_json,
)
from multipair.spi.terminal.events import (
    FrameRejected,
    MessageOut,
    PosIdMismatch,
    TerminalEvent,
    UnexpectedMessage,
)
from multipair.spi.terminal.machines import (
    PAIRING_TRANSITIONS,
    TX_TRANSITIONS,
    LinkState,
    PairingState,
    TxState,
    move,
)
from multipair.spi.terminal.pay_at_table import PayAtTable
from multipair.spi.terminal.state import (
    TerminalCounters,
    TerminalOptions,
    TerminalProfile,
    TerminalState,
)
from multipair.spi.terminal.transactions import ReceivedTransaction, ResponderFactory

__all__ = ["KeyExchange", "TerminalCore"]


@dataclass(slots=True)
class KeyExchange:
    """The terminal's half of a pairing: its DH private values and the key_request id (§4.2)."""

    message_id: str
    pos_id: str
    enc_private: int
    hmac_private: int


class TerminalCore:
    """The session's plumbing: its fields, views, output queues, sending and timers.

    :class:`~multipair.spi.terminal.session.Terminal` adds what it does with each
    input; this part only keeps, frames and queues.
    """

    def __init__(
        self,
        *,
        state: TerminalState,
        responder: ResponderFactory,
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
        self._tx: ReceivedTransaction | None = None
        self._outgoing: list[str] = []
        self._events: list[TerminalEvent] = []
        # Per connection.
        self._conn_id: str | None = None
        self._seq = 0
        self.generation: Generation | None = None
        self.query_pos_id: str | None = None
        self._pong_sent = False
        # Pairing in progress.
        self._exchange: KeyExchange | None = None
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
        self.pay_at_table = PayAtTable()
        """Pay-at-table requests waiting for the POS, and the last table config (§7.23)."""
        self._responder = responder(state, self.profile, self._options)

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
    def current_tx(self) -> ReceivedTransaction | None:
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

    def _reject(self, reason: RejectCause, detail: str) -> None:
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

    def _require_tx(self, what: str) -> ReceivedTransaction:
        if self._tx is None:
            raise LocalProtocolError(f"{what}: no transaction in progress")
        return self._tx

    def _set_pairing(self, new: PairingState) -> None:
        self._pairing = move(PAIRING_TRANSITIONS, self._pairing, new, "pairing")

    def _set_tx(self, new: TxState) -> None:
        self._tx_state = move(TX_TRANSITIONS, self._tx_state, new, "transaction")

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
