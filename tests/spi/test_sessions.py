"""The POS session against the terminal session, in memory, with a fake clock.

Two peers wired back to back (h11's ``ConnectionPair``): every frame one side
sends is fed to the other, timers fire when the fake clock reaches them. The
terminal's customer and bank are this test: it decides every outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from multipair.simulator.bank import Bank
from multipair.spi import messages as m
from multipair.spi import terminal as t
from multipair.spi.crypto import Secrets
from multipair.spi.pos import (
    AuthCodeRequired,
    CancelFailed,
    CloseConnection,
    Outcome,
    PairingFinished,
    PairingProgress,
    PosSession,
    PosSessionEvent,
    SecretsChanged,
    SignatureRequired,
    SpiFlow,
    SpiStatus,
    TransactionCompleted,
    TransactionUpdate,
    TxPhase,
)
from tests.spi.helpers import TEST_POS_INFO

START = 1_700_000_000.0


class Pair:
    """A POS session and a terminal, connected by an in-memory link."""

    def __init__(self, pos: PosSession, terminal: t.Terminal) -> None:
        self.pos = pos
        self.terminal = terminal
        self.now = START
        self.pos_events: list[PosSessionEvent] = []
        self.terminal_events: list[t.TerminalEvent] = []
        self.linked = False
        self.drop_to_terminal = False  # frames from the POS are lost (cable pulled mid-send)
        self.persisted: list[Secrets | None] = []

    @classmethod
    def paired(cls, **options: Any) -> Pair:
        """A pair that has completed pairing and is ready to transact."""
        pair = cls.unpaired(**options)
        pair.pos.pair(pair.now)
        pair.connect()
        pair.pos.pair_confirm(pair.now)
        pair.terminal.confirm_pairing(pair.now)
        pair.pump()
        assert SpiStatus.PAIRED_CONNECTED == pair.pos.status
        assert pair.pos.ready
        pair.pos_events.clear()
        pair.terminal_events.clear()
        return pair

    @classmethod
    def unpaired(cls, **options: Any) -> Pair:
        terminal = t.Terminal(
            state=t.TerminalState(serial_number="SIM-0001"),
            responder=Bank,
            options=t.TerminalOptions(**options),
        )
        return cls(PosSession(pos_id="POS1", pos_info=TEST_POS_INFO), terminal)

    def connect(self) -> None:
        self.linked = True
        self.pos.connection_made(self.now)
        self.terminal.connection_made(self.now, subprotocol="spi.2.9.0", query_pos_id="POS1")
        self.pump()

    def disconnect(self) -> None:
        if self.linked:
            self.linked = False
            self.pos.connection_lost(self.now)
            self.terminal.connection_lost(self.now)
        self.pump()

    def pump(self) -> None:
        """Deliver frames both ways until both sides are quiet."""
        for _ in range(1000):
            moved = False
            close = False
            for event in self.pos.events_received():
                moved = True
                self.pos_events.append(event)
                if isinstance(event, SecretsChanged):
                    self.persisted.append(event.secrets)
                    if event.reason == "rolled":
                        self.pos.secrets_persisted()  # as the lane does after writing them
                close = close or isinstance(event, CloseConnection)
            for frame in self.pos.data_to_send():
                moved = True
                if self.linked and not self.drop_to_terminal:
                    self.terminal.receive_text(frame, self.now)
            for frame in self.terminal.data_to_send():
                moved = True
                if self.linked:
                    self.pos.receive_text(frame, self.now)
            for tevent in self.terminal.events_received():
                moved = True
                self.terminal_events.append(tevent)
                close = close or isinstance(tevent, t.CloseConnection)
            if close and self.linked:
                # Pending frames went out above; now the socket closes.
                self.linked = False
                self.pos.connection_lost(self.now)
                self.terminal.connection_lost(self.now)
            if not moved:
                return
        raise AssertionError("the peers never went quiet")

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward, firing every timer on its second."""
        end = self.now + seconds
        while True:
            deadlines = [
                d
                for d in (self.pos.next_deadline(), self.terminal.next_deadline())
                if d is not None
            ]
            due = min(deadlines, default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self.pos.handle_timer(self.now)
            self.terminal.handle_timer(self.now)
            self.pump()
        self.now = end

    def completed(self) -> list[TransactionCompleted]:
        return [e for e in self.pos_events if isinstance(e, TransactionCompleted)]

    def requested(self) -> list[t.ReceivedTransaction]:
        return [e.tx for e in self.terminal_events if isinstance(e, t.TransactionRequested)]


# ---------------------------------------------------------------------------
# Pairing


def test_pairing_shows_the_same_code_on_both_screens_and_hands_over_the_keys() -> None:
    pair = Pair.unpaired()
    pair.pos.pair(pair.now)
    pair.connect()
    codes = [e.confirmation_code for e in pair.pos_events if isinstance(e, PairingProgress)]
    terminal_codes = [
        e.confirmation_code for e in pair.terminal_events if isinstance(e, t.PairingCodeReady)
    ]
    assert 1 == len(terminal_codes)
    assert terminal_codes[-1] == codes[-1]
    assert 6 == len(terminal_codes[0])
    pair.pos.pair_confirm(pair.now)
    pair.terminal.confirm_pairing(pair.now)
    pair.pump()
    assert PairingFinished(success=True, message="Paired.") in pair.pos_events
    assert pair.pos.secrets is not None
    assert pair.terminal.state.secrets is not None
    assert pair.pos.secrets.same_as(pair.terminal.state.secrets)
    assert [pair.pos.secrets] == pair.persisted
    assert "POS1" == pair.terminal.state.pos_id


def test_pairing_when_the_terminal_confirms_first_waits_for_the_pos_operator() -> None:
    pair = Pair.unpaired()
    pair.pos.pair(pair.now)
    pair.connect()
    pair.terminal.confirm_pairing(pair.now)
    pair.pump()
    assert SpiFlow.PAIRING == pair.pos.flow
    assert not any(isinstance(e, PairingFinished) for e in pair.pos_events)
    pair.pos.pair_confirm(pair.now)
    pair.pump()
    assert SpiStatus.PAIRED_CONNECTED == pair.pos.status
    assert pair.pos.ready  # the pong already arrived: no 18 s wait for readiness


def test_terminal_rejecting_the_pairing_fails_it_and_closes_the_link() -> None:
    pair = Pair.unpaired()
    pair.pos.pair(pair.now)
    pair.connect()
    pair.pos.pair_confirm(pair.now)
    pair.terminal.reject_pairing(pair.now)
    pair.pump()
    assert [False] == [e.success for e in pair.pos_events if isinstance(e, PairingFinished)]
    assert SpiStatus.UNPAIRED == pair.pos.status
    assert pair.pos.secrets is None
    assert not pair.linked
    assert not pair.pos.wants_connection


def test_pos_cancel_after_the_terminal_confirmed_makes_the_terminal_forget_the_keys() -> None:
    pair = Pair.unpaired()
    pair.pos.pair(pair.now)
    pair.connect()
    pair.terminal.confirm_pairing(pair.now)
    pair.pump()
    assert pair.terminal.state.secrets is not None
    pair.pos.pair_cancel(pair.now)
    pair.pump()
    assert pair.terminal.state.secrets is None
    # mypy keeps "secrets is not None" from above across pump(), so calls this unreachable.
    assert SpiStatus.UNPAIRED == pair.pos.status  # type: ignore[unreachable]


def test_unpair_from_the_pos_drops_keys_on_both_sides() -> None:
    pair = Pair.paired()
    pair.pos.unpair(pair.now)
    pair.pump()
    assert SpiStatus.UNPAIRED == pair.pos.status
    assert pair.terminal.state.secrets is None
    assert [None] == pair.persisted[-1:]


def test_unpair_from_the_terminal_unpairs_the_pos() -> None:
    pair = Pair.paired()
    pair.terminal.unpair(pair.now)
    pair.pump()
    assert SpiStatus.UNPAIRED == pair.pos.status
    assert pair.pos.secrets is None


# ---------------------------------------------------------------------------
# Transactions


def _run(
    pair: Pair,
    request: m.TransactionRequest,
    decide: Callable[[Pair], None] | None = None,
) -> TransactionCompleted:
    pair.pos.start_transaction(request, pair.now)
    pair.pump()
    (decide or (lambda p: p.terminal.complete_transaction(t.Outcome.approve(), p.now)))(pair)
    pair.pump()
    done = pair.completed()
    assert 1 == len(done), pair.pos_events
    return done[0]


TRANSACTIONS: list[m.TransactionRequest] = [
    m.PurchaseRequest(pos_ref_id="p-1", purchase_amount=1250),
    m.PurchaseRequest(pos_ref_id="p-2", purchase_amount=1250, tip_amount=200),
    m.PurchaseRequest(
        pos_ref_id="p-3", purchase_amount=1250, cash_amount=2000, surcharge_amount=50
    ),
    m.RefundRequest(pos_ref_id="r-1", refund_amount=700),
    m.CashoutRequest(pos_ref_id="c-1", cash_amount=2000),
    m.MotoPurchaseRequest(pos_ref_id="mo-1", purchase_amount=1500),
    m.SettleRequest(),
    m.SettlementEnquiryRequest(),
    m.AccountVerifyRequest(pos_ref_id="av-1"),
    m.PreauthOpenRequest(pos_ref_id="pa-1", preauth_amount=10000),
    m.ZipPurchaseRequest(pos_ref_id="z-1", purchase_amount=1000, store_code="ABC"),
    m.ZipRefundRequest(pos_ref_id="z-2", refund_amount=1000, original_receipt_number="123"),
]


@pytest.mark.parametrize("request_", TRANSACTIONS, ids=lambda r: f"{r.tx_type}-{r.pos_ref_id}")
def test_every_transaction_type_completes_end_to_end(request_: m.TransactionRequest) -> None:
    pair = Pair.paired()
    done = _run(pair, request_)
    assert (request_.pos_ref_id, request_.tx_type, Outcome.SUCCESS, False) == (
        done.pos_ref_id,
        done.tx_type,
        done.outcome,
        done.recovered,
    )
    assert done.response is not None
    assert [str(request_.event)] == [tx.event for tx in pair.requested()]
    assert SpiFlow.IDLE == pair.pos.flow


def test_preauth_family_runs_against_the_opened_preauth() -> None:
    pair = Pair.paired()
    opened = _run(pair, m.PreauthOpenRequest(pos_ref_id="pa-1", preauth_amount=10000))
    assert isinstance(opened.response, m.TransactionResponse)
    preauth_id = opened.response.preauth_id
    assert preauth_id
    followups: list[m.TransactionRequest] = [
        m.PreauthTopupRequest(pos_ref_id="pa-2", preauth_id=preauth_id, topup_amount=2000),
        m.PreauthPartialCancellationRequest(
            pos_ref_id="pa-3", preauth_id=preauth_id, preauth_cancel_amount=500
        ),
        m.PreauthExtendRequest(pos_ref_id="pa-4", preauth_id=preauth_id),
        m.PreauthCompletionRequest(
            pos_ref_id="pa-5", preauth_id=preauth_id, completion_amount=9000
        ),
    ]
    for request in followups:
        pair.pos_events.clear()
        done = _run(pair, request)
        assert (request.tx_type, Outcome.SUCCESS) == (done.tx_type, done.outcome)


def test_a_declined_purchase_is_failed_with_the_host_text() -> None:
    pair = Pair.paired()
    done = _run(
        pair,
        m.PurchaseRequest(pos_ref_id="d-1", purchase_amount=1051),
        lambda p: p.terminal.complete_transaction(t.Outcome.decline(), p.now),
    )
    assert (Outcome.FAILED, "DECLINED") == (done.outcome, done.message)
    assert isinstance(done.response, m.TransactionResponse)
    assert "51" == done.response.host_response_code


def test_progress_messages_reach_the_pos() -> None:
    pair = Pair.paired()

    def slow_card(p: Pair) -> None:
        p.terminal.send_txn_update("PRESENT CARD", p.now)
        p.pump()
        p.terminal.send_txn_update("PROCESSING", p.now)
        p.pump()
        p.terminal.complete_transaction(t.Outcome.approve(), p.now)

    _run(pair, m.PurchaseRequest(pos_ref_id="s-1", purchase_amount=1000), slow_card)
    texts = [e.display_message_text for e in pair.pos_events if isinstance(e, TransactionUpdate)]
    assert ["PRESENT CARD", "PROCESSING"] == texts


def test_cancel_before_the_point_of_no_return_fails_the_purchase() -> None:
    pair = Pair.paired()

    def customer_waits(p: Pair) -> None:
        p.pos.cancel_transaction(p.now)
        p.pump()
        p.advance(1)

    done = _run(pair, m.PurchaseRequest(pos_ref_id="x-1", purchase_amount=1000), customer_waits)
    assert Outcome.FAILED == done.outcome
    assert isinstance(done.response, m.TransactionResponse)
    assert "511" == done.response.host_response_code


def test_cancel_past_the_point_of_no_return_is_refused_and_the_purchase_goes_on() -> None:
    pair = Pair.paired()

    def too_late(p: Pair) -> None:
        p.terminal.pass_point_of_no_return(p.now)
        p.pos.cancel_transaction(p.now)
        p.pump()
        reasons = [e.error_reason for e in p.pos_events if isinstance(e, CancelFailed)]
        assert ["TXN_PAST_POINT_OF_NO_RETURN"] == reasons
        p.terminal.complete_transaction(t.Outcome.approve(), p.now)

    done = _run(pair, m.PurchaseRequest(pos_ref_id="x-2", purchase_amount=1000), too_late)
    assert Outcome.SUCCESS == done.outcome


@pytest.mark.parametrize(
    ("accepted", "expected"), [(True, Outcome.SUCCESS), (False, Outcome.FAILED)]
)
def test_signature_flow(accepted: bool, expected: Outcome) -> None:
    pair = Pair.paired()

    def signature(p: Pair) -> None:
        p.terminal.require_signature(p.now)
        p.pump()
        (required,) = [e for e in p.pos_events if isinstance(e, SignatureRequired)]
        assert not required.placeholder
        assert required.merchant_receipt
        p.pos.accept_signature(accepted, p.now)
        p.pump()
        decided = [e.accepted for e in p.terminal_events if isinstance(e, t.SignatureDecided)]
        assert [accepted] == decided
        p.terminal.complete_transaction(
            t.Outcome.approve() if accepted else t.Outcome.signature_declined(), p.now
        )

    done = _run(pair, m.PurchaseRequest(pos_ref_id="sig-1", purchase_amount=1052), signature)
    assert expected == done.outcome


def test_phone_authorisation_code_flow() -> None:
    pair = Pair.paired()

    def phone_auth(p: Pair) -> None:
        p.terminal.require_auth_code(p.now)
        p.pump()
        (required,) = [e for e in p.pos_events if isinstance(e, AuthCodeRequired)]
        assert required.auth_centre_phone_number
        p.pos.submit_auth_code("AB1234", p.now)
        p.pump()
        codes = [e.code for e in p.terminal_events if isinstance(e, t.AuthCodeReceived)]
        assert ["AB1234"] == codes
        p.terminal.complete_transaction(t.Outcome.approve(auth_code="AB1234"), p.now)

    done = _run(pair, m.PurchaseRequest(pos_ref_id="auth-1", purchase_amount=1053), phone_auth)
    assert Outcome.SUCCESS == done.outcome
    assert isinstance(done.response, m.TransactionResponse)
    assert "AB1234" == done.response.auth_code


def test_a_second_transaction_is_refused_locally_while_one_runs() -> None:
    from multipair.exceptions import LocalProtocolError

    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="a", purchase_amount=100), pair.now)
    with pytest.raises(LocalProtocolError, match="Not Idle"):
        pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="b", purchase_amount=100), pair.now)


# ---------------------------------------------------------------------------
# Link health and keys


def test_a_silent_terminal_is_disconnected_after_two_missed_pongs() -> None:
    pair = Pair.paired()
    pair.terminal.options.answer_pings = False
    pair.advance(18)  # the next ping goes out; no pong
    assert pair.linked
    pair.advance(5)  # first miss: ping again at once
    assert pair.linked
    pair.advance(5)  # second miss: close
    assert not pair.linked
    # mypy keeps "pair.linked" from above across advance(), so calls this unreachable.
    assert any(isinstance(e, CloseConnection) for e in pair.pos_events)  # type: ignore[unreachable]
    assert SpiStatus.PAIRED_CONNECTING == pair.pos.status


def test_key_rollover_switches_both_sides_and_transactions_go_on() -> None:
    pair = Pair.paired()
    before = pair.pos.secrets
    assert before is not None
    pair.terminal.start_key_rollover(pair.now)
    pair.pump()
    after = pair.pos.secrets
    assert after is not None
    assert after.same_as(before.rolled())
    assert pair.terminal.state.secrets is not None
    assert after.same_as(pair.terminal.state.secrets)
    assert [after] == pair.persisted[-1:]
    done = _run(pair, m.PurchaseRequest(pos_ref_id="k-1", purchase_amount=100))
    assert Outcome.SUCCESS == done.outcome


def test_a_tampered_frame_is_dropped_and_the_link_survives() -> None:
    pair = Pair.paired()
    pair.terminal.inject_bad_signature(pair.now)
    pair.pump()
    assert ["FrameRejected"] == [type(e).__name__ for e in pair.pos_events]
    done = _run(pair, m.PurchaseRequest(pos_ref_id="tm-1", purchase_amount=100))
    assert Outcome.SUCCESS == done.outcome


# ---------------------------------------------------------------------------
# Recovery (§7.12): a drop at each step of a purchase


def _reconnect(pair: Pair) -> None:
    pair.advance(1.5)
    pair.connect()


def test_drop_before_the_terminal_got_the_request_recovers_as_never_happened() -> None:
    pair = Pair.paired()
    pair.drop_to_terminal = True
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-1", purchase_amount=100), pair.now)
    pair.pump()
    pair.drop_to_terminal = False
    pair.disconnect()
    _reconnect(pair)
    (done,) = pair.completed()
    assert (Outcome.FAILED, True) == (done.outcome, done.recovered)
    assert [] == pair.requested()  # the request was never sent twice


@pytest.mark.parametrize("terminal_outcome", ["approve", "decline"])
def test_drop_after_the_request_arrived_recovers_the_true_outcome(terminal_outcome: str) -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-2", purchase_amount=100), pair.now)
    pair.pump()
    pair.disconnect()
    outcome = t.Outcome.approve() if terminal_outcome == "approve" else t.Outcome.decline()
    pair.terminal.complete_transaction(outcome, pair.now)  # finished while the POS was away
    _reconnect(pair)
    (done,) = pair.completed()
    expected = Outcome.SUCCESS if terminal_outcome == "approve" else Outcome.FAILED
    assert (expected, True) == (done.outcome, done.recovered)
    assert 1 == len(pair.requested())


def test_drop_after_the_result_was_produced_but_not_sent_recovers_it() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-3", purchase_amount=100), pair.now)
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now, send=False)
    pair.disconnect()
    _reconnect(pair)
    (done,) = pair.completed()
    assert (Outcome.SUCCESS, True) == (done.outcome, done.recovered)
    assert isinstance(done.response, m.TransactionResponse)
    assert "rc-3" == done.response.pos_ref_id


def test_drop_while_awaiting_signature_keeps_waiting_for_it() -> None:
    """§7.10 R2: the POS already knew; after the reconnect it still waits and can answer."""
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-4", purchase_amount=100), pair.now)
    pair.pump()
    pair.terminal.require_signature(pair.now)
    pair.pump()
    pair.disconnect()
    _reconnect(pair)
    assert TxPhase.AWAITING_SIGNATURE == pair.pos.current_tx_phase
    pair.pos.accept_signature(True, pair.now)
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert (Outcome.SUCCESS, True) == (done.outcome, done.recovered)


def test_signature_asked_while_the_pos_was_away_is_learned_from_get_transaction() -> None:
    """§7.10 R1: the signature step is entered with a placeholder receipt."""
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-4b", purchase_amount=100), pair.now)
    pair.pump()
    pair.disconnect()
    pair.terminal.require_signature(pair.now)  # nobody there to hear it
    _reconnect(pair)
    (required,) = [e for e in pair.pos_events if isinstance(e, SignatureRequired)]
    assert required.placeholder
    pair.pos.accept_signature(False, pair.now)
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.signature_declined(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert (Outcome.FAILED, True) == (done.outcome, done.recovered)


def test_transaction_still_running_after_reconnect_is_waited_for() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-5", purchase_amount=100), pair.now)
    pair.pump()
    pair.disconnect()
    _reconnect(pair)
    assert [] == pair.completed()  # TRANSACTION_IN_PROGRESS: keep waiting
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert (Outcome.SUCCESS, True) == (done.outcome, done.recovered)


def test_a_restarted_pos_recovers_without_resending_the_request() -> None:
    pair = Pair.paired()
    keys = pair.pos.secrets
    assert keys is not None
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rc-6", purchase_amount=100), pair.now)
    pair.pump()
    pair.disconnect()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    # The lane process died; a new one starts from the stored keys and record.
    pair.pos = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=keys)
    pair.pos.recover("rc-6", m.TxType.PURCHASE, pair.now)
    _reconnect(pair)
    (done,) = pair.completed()
    assert (Outcome.SUCCESS, True, "rc-6") == (done.outcome, done.recovered, done.pos_ref_id)
    assert 1 == len(pair.requested())


def test_a_reversal_cut_by_a_disconnect_fails_at_once() -> None:
    pair = Pair.paired()
    _run(pair, m.PurchaseRequest(pos_ref_id="rv-0", purchase_amount=100))
    pair.pos_events.clear()
    pair.pos.start_transaction(m.ReversalRequest(pos_ref_id="rv-0"), pair.now)
    pair.pump()
    pair.disconnect()
    (done,) = pair.completed()
    assert (m.TxType.REVERSAL, Outcome.FAILED) == (done.tx_type, done.outcome)


def test_a_transaction_started_while_disconnected_is_sent_when_ready() -> None:
    pair = Pair.paired()
    pair.disconnect()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="ld-1", purchase_amount=100), pair.now)
    pair.pump()
    assert [] == pair.requested()
    _reconnect(pair)
    assert ["ld-1"] == [tx.pos_ref_id for tx in pair.requested()]
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert (Outcome.SUCCESS, False) == (done.outcome, done.recovered)


def test_a_pos_restarted_between_persisting_rolled_keys_and_replying_falls_back() -> None:
    """§5.7/§13.6: the terminal never got the reply and stays on the old keys."""
    pair = Pair.paired()
    old = pair.pos.secrets
    assert old is not None
    pair.terminal.start_key_rollover(pair.now)
    for frame in pair.terminal.data_to_send():  # the request reaches the POS ...
        pair.pos.receive_text(frame, pair.now)
    (rolled,) = [e for e in pair.pos.events_received() if isinstance(e, SecretsChanged)]
    assert rolled.previous is not None
    assert rolled.previous.same_as(old)
    # ... which persists the new keys and dies before its reply leaves.
    pair.linked = False
    pair.terminal.connection_lost(pair.now)
    assert rolled.secrets is not None
    pair.pos = PosSession(
        pos_id="POS1", pos_info=TEST_POS_INFO, secrets=rolled.secrets, previous_secrets=old
    )
    _reconnect(pair)
    pair.advance(6)  # the ping under the new keys goes unanswered: try the old ones
    assert pair.pos.ready
    assert pair.pos.secrets is not None
    assert pair.pos.secrets.same_as(old)
    assert [old] == [e.secrets for e in pair.pos_events if isinstance(e, SecretsChanged)][-1:]
    done = _run(pair, m.PurchaseRequest(pos_ref_id="kr-1", purchase_amount=100))
    assert Outcome.SUCCESS == done.outcome


def test_after_a_confirmed_roll_the_old_keys_are_forgotten() -> None:
    pair = Pair.paired()
    pair.terminal.start_key_rollover(pair.now)
    pair.pump()
    _run(pair, m.PurchaseRequest(pos_ref_id="kr-2", purchase_amount=100))
    settled = [e for e in pair.pos_events if isinstance(e, SecretsChanged)]
    assert ["rolled", "roll_settled"] == [e.reason for e in settled]
    assert settled[-1].previous is None


def test_a_settlement_cut_by_a_drop_ends_unknown_not_failed() -> None:
    """§7.14: no pos_ref_id, so get_transaction cannot find it; only an enquiry can tell."""
    pair = Pair.paired()
    pair.pos.start_transaction(m.SettleRequest(), pair.now)
    pair.pump()
    pair.disconnect()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    _reconnect(pair)
    (done,) = pair.completed()
    assert (m.TxType.SETTLE, Outcome.UNKNOWN) == (done.tx_type, done.outcome)


def test_a_long_settlement_is_not_polled_with_get_transaction() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.SettleRequest(), pair.now)
    pair.pump()
    pair.advance(45)  # two poll periods: a lookup would fail it (INVALID_ARGUMENTS)
    assert [] == pair.completed()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert Outcome.SUCCESS == done.outcome


def test_a_cancel_asked_while_disconnected_goes_out_on_reconnect() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="cx-1", purchase_amount=100), pair.now)
    pair.pump()
    pair.disconnect()
    pair.pos.cancel_transaction(pair.now)
    _reconnect(pair)
    pair.advance(1)
    (done,) = pair.completed()
    assert (Outcome.FAILED, True) == (done.outcome, done.recovered)
    assert [True] == [e.accepted for e in pair.terminal_events if isinstance(e, t.CancelRequested)]


def test_a_signature_answer_while_disconnected_is_refused_not_lost() -> None:
    from multipair.exceptions import LocalProtocolError

    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="sg-1", purchase_amount=100), pair.now)
    pair.pump()
    pair.terminal.require_signature(pair.now)
    pair.pump()
    pair.disconnect()
    with pytest.raises(LocalProtocolError, match="Not connected"):
        pair.pos.accept_signature(True, pair.now)
    _reconnect(pair)
    pair.pos.accept_signature(True, pair.now)  # still waiting: answered now
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert Outcome.SUCCESS == done.outcome


def test_recovered_is_set_only_after_a_disconnect() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="rv-x", purchase_amount=100), pair.now)
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now, send=False)
    pair.advance(22)  # learned from the 20 s get_transaction poll, link never dropped
    (done,) = pair.completed()
    assert (Outcome.SUCCESS, False) == (done.outcome, done.recovered)
