"""The POS session: transactions on top of the link (PROTOCOL.md §7, §8.3, §8.4, §13.7).

:class:`PosSession` adds to :class:`~multipair.spi.pos.link.PosLink` (with pay at
table, :class:`~multipair.spi.pos.table.PayAtTableLink`) the one
transaction at a time: starting or recovering it, sending its request at the
first "ready to transact", binding the terminal's answers to it (§13.9), the
1 s monitor that asks ``get_transaction`` and gives up on a cancel, and
completing it with an :class:`~multipair.spi.states.Outcome`. The rules it
keeps are listed in :mod:`multipair.spi.pos`.
"""

from __future__ import annotations

from multipair.exceptions import LocalProtocolError
from multipair.spi import messages as m
from multipair.spi.envelope import Message, Received
from multipair.spi.pos.events import (
    AuthCodeRequired,
    CancelFailed,
    IgnoredMessage,
    LastTransactionResult,
    SignatureRequired,
    TransactionCompleted,
    TransactionLookupResult,
    TransactionRequestSent,
    TransactionUpdate,
)
from multipair.spi.pos.table import PayAtTableLink
from multipair.spi.pos.transaction import (
    GT_DEFINITELY_FAILED,
    GT_KEEP_WAITING,
    NO_POS_REF_ID_TYPES,
    PRINTERLESS_MODELS,
    Transaction,
    answer_names,
    describe,
    outcome_of,
    without_printing,
)
from multipair.spi.states import Outcome, SpiFlow, SpiStatus, TxPhase

__all__ = ["PosSession"]


class PosSession(PayAtTableLink):
    """One POS–terminal pairing, POS side. See :mod:`multipair.spi.pos` for its rules.

    Typical I/O shell loop::

        session.connection_made(now)            # socket open
        session.receive_text(frame, now)        # each frame in
        session.handle_timer(now)               # at session.next_deadline()
        for event in session.events_received(): ...   # persist / publish first
        for frame in session.data_to_send(): await ws.send(frame)
    """

    # Set per instance; the class-level values are the start state.
    _tx: Transaction | None = None
    """The one running transaction (§8.3)."""
    _ready_requests_skipped = False
    """The link became ready mid-transaction: the §5.3 idle requests are still owed."""

    @property
    def current_pos_ref_id(self) -> str | None:
        """The running transaction's ``pos_ref_id``, if any."""
        return self._tx.pos_ref_id if self._tx else None

    @property
    def current_tx_phase(self) -> TxPhase | None:
        """The running transaction's phase, if any."""
        return self._tx.phase if self._tx else None

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
            request = without_printing(request)
        tx = Transaction(
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
        tx = Transaction(
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
        if tx.phase is TxPhase.REQUESTED:
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

    def _send_request(self, tx: Transaction, now: float) -> None:
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

    def _send_gt(self, tx: Transaction, now: float) -> None:
        request = m.GetTransactionRequest(pos_ref_id=tx.pos_ref_id)
        tx.gt_request_id = self._ids.next(request.id_prefix)
        tx.last_state_request_at = now
        self._queue(tx.gt_request_id, request, now)

    # ------------------------------------------------------------------
    # The link's hooks (PosLink)
    # ------------------------------------------------------------------

    def _transaction_deadline(self) -> float | None:
        if self._tx is not None and self._tx.phase is not TxPhase.REQUESTED:
            return self._next_monitor_tick(self._tx)
        return None

    def _transaction_timer(self, now: float) -> None:
        tx = self._tx
        if tx is not None and tx.phase is not TxPhase.REQUESTED:
            while self._tx is tx and now >= self._next_monitor_tick(tx):
                tick = self._next_monitor_tick(tx)
                tx.monitor_anchor = tick
                self._monitor(tx, tick)

    def _transaction_link_lost(self, now: float) -> None:
        tx = self._tx
        if tx is not None and tx.phase is not TxPhase.REQUESTED:
            tx.recovering = True
            if tx.tx_type is m.TxType.REVERSAL:
                # §7.15: a reversal cannot be recovered.
                self._complete(tx, Outcome.FAILED, "Connection lost during a reversal.", None, now)
            else:
                tx.gt_request_id = None

    def _transaction_ready(self, now: float) -> bool:
        tx = self._tx
        if tx is None:
            return False
        self._ready_requests_skipped = True
        if tx.phase is TxPhase.REQUESTED:
            self._send_request(tx, now)
        elif tx.tx_type in NO_POS_REF_ID_TYPES:
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
        return True

    # ------------------------------------------------------------------
    # Internals: receiving
    # ------------------------------------------------------------------

    def _dispatch(
        self, parsed: m.TerminalMessage, message: Message, got: Received, now: float
    ) -> None:
        match parsed:
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
            case _:
                super()._dispatch(parsed, message, got, now)

    def _matches_tx(self, event: str, pos_ref_id: str | None) -> Transaction | None:
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
        if tx.tx_type in NO_POS_REF_ID_TYPES and message_id != tx.request_id:
            # No pos_ref_id to bind it (§7.14): only the echo of our request's
            # id ties it to this request, so a replayed one cannot close it.
            self._events.append(IgnoredMessage(event=event, reason="id is not this request's id"))
            return
        if (
            isinstance(parsed, m.TransactionResponse)
            and parsed.pos_ref_id is None
            and (tx.tx_type not in NO_POS_REF_ID_TYPES)
        ):
            # §13.9: 2.9.13 ignores a response without pos_ref_id; GT will find it.
            self._events.append(IgnoredMessage(event=event, reason="response has no pos_ref_id"))
            return
        outcome = outcome_of(parsed.success)
        self._complete(tx, outcome, describe(parsed, outcome), parsed, now)

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
        super()._on_error(parsed, now)
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
            if not answer_names(parsed, pos_ref_id):
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
        if not answer_names(parsed, tx.pos_ref_id):
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
            outcome = outcome_of(parsed.tx.success)
            self._complete(tx, outcome, describe(parsed.tx, outcome), parsed.tx, now)
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
        if reason.startswith(GT_KEEP_WAITING):
            return  # R4, R8
        if reason in GT_DEFINITELY_FAILED:
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

    def _next_monitor_tick(self, tx: Transaction) -> float:
        return tx.monitor_anchor + self.timings.tx_monitor_interval_s

    def _monitor(self, tx: Transaction, now: float) -> None:
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
            and tx.tx_type not in NO_POS_REF_ID_TYPES
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
        tx: Transaction,
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
