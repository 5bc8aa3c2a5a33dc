"""The terminal's SPI session: link, pairing, keys, liveness and the transaction flow.

The rules are in :mod:`multipair.spi.terminal` (its docstring). This module
holds the one class that applies them, :class:`Terminal`: it takes websocket
text and ``now`` in and gives events, frames and the next deadline out, and
never reads a clock or touches a socket (STYLE.md 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import orjson

from multipair.exceptions import CryptoError, LocalProtocolError
from multipair.spi import messages as m
from multipair.spi.common import PLAIN_AFTER_PAIRING
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
    Message,
    RejectedFrame,
    RejectReason,
    decode_frame,
    generation_from_subprotocol,
)
from multipair.spi.terminal import replies
from multipair.spi.terminal.core import KeyExchange, TerminalCore
from multipair.spi.terminal.events import (
    AuthCodeReceived,
    CancelRequested,
    CloseConnection,
    KeysRolled,
    MessageIn,
    MessageOut,
    Paired,
    PairingCodeReady,
    PairingFailed,
    PairingRequested,
    PayAtTableAnswered,
    PosIdMismatch,
    PosInfoReceived,
    PrintRequested,
    SignatureDecided,
    TableConfigReceived,
    TransactionFinished,
    TransactionRefused,
    TransactionRequested,
    Unpaired,
)
from multipair.spi.terminal.machines import (
    CANCELLABLE,
    LINK_TRANSITIONS,
    LinkState,
    PairingState,
    TxState,
    move,
)
from multipair.spi.terminal.pay_at_table import Unmatched
from multipair.spi.terminal.state import (
    TransactionRecord,
)
from multipair.spi.terminal.transactions import (
    TRANSACTION_EVENTS,
    Outcome,
    Refusal,
    vet_request,
)

__all__ = ["Terminal"]


def _as_str(value: object) -> str | None:
    # Lookup and signature fields are strings or absent; a number is not a pos_ref_id here.
    return value if isinstance(value, str) else None


class Terminal(TerminalCore):
    """One simulated terminal's SPI session (see :mod:`multipair.spi.terminal` for its rules).

    ``responder`` builds the bank that writes each transaction's answer from
    this terminal's state, profile and options (the simulator passes
    :class:`multipair.simulator.bank.Bank`).
    """

    # ------------------------------------------------------------------ link

    def connection_made(
        self, now: float, *, subprotocol: str | None = None, query_pos_id: str | None = None
    ) -> None:
        """A POS connected (any ``spi.2.x.y`` sub-protocol; ``?posId=`` if it sent one)."""
        self._link = move(LINK_TRANSITIONS, self._link, LinkState.CONNECTED, "connection")
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
        self._link = move(LINK_TRANSITIONS, self._link, LinkState.DISCONNECTED, "connection")
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
                self._reject(still.reason, still.detail)
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
            if message.event in TRANSACTION_EVENTS:
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

    # ------------------------------------------------------------------ pay at table (caller)

    def send_pay_at_table(self, request: m.TerminalPayAtTableRequest, now: float) -> str:
        """Send one pay-at-table request (§7.23) under a new id, pending until answered.

        Returns the id; the reply comes as :class:`PayAtTableAnswered`. Needs a
        paired, connected POS (else ``LocalProtocolError``).
        """
        event = str(request.event)
        self._require_paired_link(event)
        message_id = self._send(event, request.to_data(), now)
        self.pay_at_table.sent(message_id, request, now)
        return message_id

    def abandon_pay_at_table(self, message_id: str) -> bool:
        """Stop waiting for the reply to ``message_id`` (the caller's timeout); True if pending."""
        return self.pay_at_table.abandon(message_id)

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
            "merchant_receipt": self._responder.signature_receipt(tx),
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
        data = self._responder.response_data(tx, outcome, now)
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
            self._reject(PLAIN_AFTER_PAIRING, f"plain {message.event[:40]!r} from a paired POS")
            return
        if message.event == "pair_request":
            self._on_pair_request(message, now)
        elif message.event == "key_response":
            self._on_key_response(message, now)
        elif self._active_secrets() is not None:
            # §2.2: every message after key_response travels encrypted.
            self._reject(PLAIN_AFTER_PAIRING, f"plain {message.event!r} from a paired POS")
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
        self._exchange = KeyExchange(
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

    def _on_transaction_request(self, message: Message, now: float) -> None:
        vetted = vet_request(message, now, busy=self._tx is not None)
        if isinstance(vetted, Refusal):
            self._reply(message, vetted.response_event, vetted.data(), now)
            self._event(
                TransactionRefused(
                    pos_ref_id=vetted.pos_ref_id,
                    request=message.event,
                    error_reason=vetted.error_reason,
                )
            )
            return
        self._tx = vetted
        self._set_tx(TxState.CARD_PENDING)
        self._event(TransactionRequested(tx=vetted))

    def _on_cancel(self, message: Message, now: float) -> None:
        tx = self._tx
        if not self.options.answer_cancel:
            self._event(
                CancelRequested(pos_ref_id=None if tx is None else tx.pos_ref_id, accepted=False)
            )
            return
        if tx is None:
            self._reply(message, "error", dict(replies.NO_TRANSACTION_TO_CANCEL), now)
            self._event(CancelRequested(pos_ref_id=None, accepted=False))
            return
        if self._tx_state in CANCELLABLE or self._cancelled:
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
            {"success": False, "pos_ref_id": tx.pos_ref_id, **replies.PAST_POINT_OF_NO_RETURN},
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

    def _on_get_transaction(self, message: Message, now: float) -> None:
        reply = replies.get_transaction_reply(
            message.get("pos_ref_id"),
            state=self.state,
            current=self._tx,
            tx_state=self._tx_state,
            forced_error=self.options.get_transaction_error,
        )
        self._reply(message, "get_transaction_response", reply, now)

    def _on_get_last_transaction(self, message: Message, now: float) -> None:
        reply = replies.last_transaction_reply(
            state=self.state, current=self._tx, tx_state=self._tx_state
        )
        self._reply(message, "last_transaction", reply, now)

    def _on_terminal_status(self, message: Message, now: float) -> None:
        data = replies.terminal_status(self.options, busy=self._tx is not None)
        self._reply(message, "terminal_status", data, now)

    def _on_terminal_configuration(self, message: Message, now: float) -> None:
        data = replies.terminal_configuration(self.state, self.profile, self.options)
        self._reply(message, "terminal_configuration", data, now)

    def _on_set_pos_info(self, message: Message, now: float) -> None:
        self._reply(message, "set_pos_info_response", {"success": True}, now)
        self._event(PosInfoReceived(data=message.data if message.data is not None else {}))

    def _on_print(self, message: Message, now: float) -> None:
        data = replies.print_reply(self.options, has_printer=self.has_printer)
        self._reply(message, "print_response", data, now)
        self._event(
            PrintRequested(key=_as_str(message.get("key")), payload=_as_str(message.get("payload")))
        )

    def _on_pay_at_table(self, message: Message, now: float) -> None:
        got = self.pay_at_table.receive(message)
        if isinstance(got, Unmatched):
            self._unexpected(message, got.reason)
            return
        if message.event == m.Event.SET_TABLE_CONFIG:
            self._event(
                TableConfigReceived(
                    message_id=message.id, answered=got.pending is not None, data=got.data
                )
            )
        if got.pending is not None:
            self._event(
                PayAtTableAnswered(
                    request_id=got.pending.message_id,
                    request=got.pending.event,
                    reply_event=message.event,
                    message_id=message.id,
                    data=got.data,
                )
            )

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
        "set_table_config": _on_pay_at_table,
        "bill_details": _on_pay_at_table,
        "open_tables": _on_pay_at_table,
        "bill_payment_flow_ended_ack": _on_pay_at_table,
    }
