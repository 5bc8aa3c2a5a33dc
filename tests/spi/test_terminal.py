"""The sans-I/O terminal, driven in memory by hand-made POS frames of every generation."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multipair.exceptions import LocalProtocolError
from multipair.simulator.bank import Bank
from multipair.spi import messages as m
from multipair.spi.crypto import (
    Secrets,
    confirmation_code,
)
from multipair.spi.envelope import (
    SUBPROTOCOLS,
    Generation,
    Message,
    MessageStamp,
    Received,
    RejectReason,
    decode_frame,
)
from multipair.spi.terminal import (
    HISTORY_LIMIT,
    AuthCodeReceived,
    CancelRequested,
    CloseConnection,
    FrameRejected,
    KeysRolled,
    Outcome,
    Paired,
    PairingCodeReady,
    PairingFailed,
    PairingRequested,
    PairingState,
    PosIdMismatch,
    PosInfoReceived,
    SignatureDecided,
    Terminal,
    TerminalEvent,
    TerminalOptions,
    TerminalState,
    TransactionFinished,
    TransactionRefused,
    TransactionRequested,
    TxState,
    Unpaired,
)
from tests.spi.helpers import KEYS, answer_key_request
from tests.spi_shared import load_fixture, load_vector

T0 = 1623128612.123  # 2021-06-08T05:03:32.123Z, the vectors' frozen clock
GENERATIONS = [Generation.V26, Generation.V28, Generation.V29]


class FakePos:
    """Just enough POS to talk to a terminal: a MessageStamp, DH, and a decoder."""

    def __init__(self, generation: Generation = Generation.V29, pos_id: str = "POS1") -> None:
        self.stamp = MessageStamp(pos_id=pos_id, generation=generation)
        self.counter = 0

    @property
    def secrets(self) -> Secrets | None:
        return self.stamp.secrets

    def frame(
        self, event: str, data: dict[str, Any] | None = None, *, msg_id: str | None = None
    ) -> str:
        if msg_id is None:
            self.counter += 1
            msg_id = f"{event[:5]}{self.counter}"
        return self.stamp.encode(msg_id, event, data, now=T0)

    def read(self, frames: list[str], secrets: Secrets | None = None) -> list[Message]:
        """Decode terminal frames the strict way the JS client does (upper-case hmac only)."""
        keys = secrets if secrets is not None else self.secrets
        out = []
        for frame in frames:
            got = decode_frame(frame, keys, strict_hmac_case=True)
            assert isinstance(got, Received), got
            out.append(got.message)
        return out


def new_terminal(options: TerminalOptions | None = None, serial: str = "SIM-0001") -> Terminal:
    return Terminal(state=TerminalState(serial_number=serial), responder=Bank, options=options)


def exchange(terminal: Terminal, pos: FakePos, frame: str, now: float = T0) -> list[Message]:
    terminal.receive_text(frame, now)
    return pos.read(terminal.data_to_send())


def pair(terminal: Terminal, pos: FakePos, *, confirm: bool = True) -> tuple[str, str]:
    """Run §4.2 up to the code; returns (terminal code, POS code)."""
    if not terminal.connected:
        terminal.connection_made(T0, subprotocol=SUBPROTOCOLS[pos.stamp.generation])
    [key_request] = exchange(terminal, pos, pos.frame("pair_request", {"padding": True}))
    assert "key_request" == key_request.event
    answer, pos.stamp.secrets = answer_key_request(key_request.data or {})
    response = pos.frame("key_response", answer, msg_id=key_request.id)
    terminal.receive_text(response, T0)
    [key_check_frame] = terminal.data_to_send()
    [key_check] = pos.read([key_check_frame])
    assert "key_check" == key_check.event
    pos_code = confirmation_code(json.loads(key_check_frame)["hmac"])
    events = terminal.events_received()
    ready = [e for e in events if isinstance(e, PairingCodeReady)]
    assert 1 == len(ready)
    if confirm:
        terminal.confirm_pairing(T0)
    return ready[0].confirmation_code, pos_code


def paired(generation: Generation = Generation.V29, **options: Any) -> tuple[Terminal, FakePos]:
    """A terminal already paired with ``POS1`` (library test keys), a POS connected.

    Pairing itself (two 2048-bit DH exchanges) is covered by the pairing tests;
    the other tests start from its result.
    """
    state = TerminalState(serial_number="SIM-0001", pos_id="POS1", secrets=KEYS)
    terminal = Terminal(state=state, responder=Bank, options=TerminalOptions(**options))
    terminal.connection_made(T0, subprotocol=SUBPROTOCOLS[generation])
    pos = FakePos(generation)
    pos.stamp.secrets = KEYS
    return terminal, pos


def only(events: list[TerminalEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def purchase(pos: FakePos, ref: str = "order-1", amount: int = 1000, **extra: Any) -> str:
    data = {"pos_ref_id": ref, "purchase_amount": amount, "tip_amount": 0, "cash_amount": 0}
    data.update(extra)
    return pos.frame("purchase", data)


# ---------------------------------------------------------------- pairing


@pytest.mark.parametrize("generation", GENERATIONS)
def test_pairing_gives_the_same_confirmation_code_on_both_sides(generation: Generation) -> None:
    terminal = new_terminal()
    pos = FakePos(generation)
    terminal_code, pos_code = pair(terminal, pos)
    [pair_response] = pos.read(terminal.data_to_send())
    assert pos_code == terminal_code
    assert 6 == len(terminal_code)
    assert ("pair_response", {"success": True}) == (pair_response.event, pair_response.data)
    assert [Paired(pos_id="POS1")] == terminal.events_received()
    assert pos.secrets is not None
    assert terminal.state.secrets is not None
    assert terminal.state.secrets.same_as(pos.secrets)
    assert "POS1" == terminal.state.pos_id


def test_key_request_carries_upper_case_csprng_public_values() -> None:
    terminal = new_terminal()
    pos = FakePos()
    terminal.connection_made(T0, subprotocol="spi.2.9.0", query_pos_id="POS1")
    [first] = exchange(terminal, pos, pos.frame("pair_request", {"padding": True}))
    [second] = exchange(terminal, pos, pos.frame("pair_request", {"padding": True}))
    a1, a2 = first.data["enc"]["A"], second.data["enc"]["A"]  # type: ignore[index]
    assert a1.upper() == a1
    assert a1 != a2
    assert [PairingRequested(pos_id="POS1")] * 2 == terminal.events_received()


def test_terminal_rejecting_the_code_sends_failure_and_stays_unpaired() -> None:
    terminal = new_terminal()
    pos = FakePos()
    pair(terminal, pos, confirm=False)
    terminal.reject_pairing(T0)
    [pair_response] = pos.read(terminal.data_to_send())
    assert {"success": False} == pair_response.data
    assert [PairingFailed(reason="rejected on the terminal")] == terminal.events_received()
    assert PairingState.UNPAIRED == terminal.pairing_state
    assert terminal.state.secrets is None


def test_pos_cancel_during_confirmation_drops_the_half_made_pairing() -> None:
    terminal = new_terminal()
    pos = FakePos()
    pair(terminal, pos, confirm=False)
    terminal.receive_text(pos.frame("drop_keys"), T0)
    assert [PairingFailed(reason="cancelled by the POS")] == terminal.events_received()
    with pytest.raises(LocalProtocolError):
        terminal.confirm_pairing(T0)


def test_drop_keys_from_the_pos_unpairs_without_reply() -> None:
    terminal, pos = paired()
    terminal.receive_text(pos.frame("drop_keys"), T0)
    assert [] == terminal.data_to_send()
    assert [Unpaired(by="pos")] == terminal.events_received()
    assert (None, None) == (terminal.state.secrets, terminal.state.pos_id)


def test_terminal_unpair_sends_drop_keys_under_the_old_keys() -> None:
    terminal, pos = paired()
    terminal.unpair(T0)
    [drop] = pos.read(terminal.data_to_send())
    assert "drop_keys" == drop.event
    assert [Unpaired(by="terminal")] == terminal.events_received()
    # A later encrypted frame has no keys to verify against.
    terminal.receive_text(pos.frame("ping"), T0)
    [rejected] = terminal.events_received()
    assert isinstance(rejected, FrameRejected)
    assert "no_secrets" == rejected.reason


def test_losing_the_connection_mid_pairing_fails_it() -> None:
    terminal = new_terminal()
    pos = FakePos()
    pair(terminal, pos, confirm=False)
    terminal.connection_lost(T0)
    assert [PairingFailed(reason="connection lost")] == terminal.events_received()
    assert PairingState.UNPAIRED == terminal.pairing_state


def test_illegal_moves_raise_local_protocol_errors() -> None:
    terminal = new_terminal()
    with pytest.raises(LocalProtocolError):
        terminal.receive_text("{}", T0)
    terminal.connection_made(T0)
    with pytest.raises(LocalProtocolError):
        terminal.connection_made(T0)
    with pytest.raises(LocalProtocolError):
        terminal.confirm_pairing(T0)
    with pytest.raises(LocalProtocolError):
        terminal.complete_transaction(Outcome.approve(), T0)
    with pytest.raises(LocalProtocolError):
        terminal.start_key_rollover(T0)


# ---------------------------------------------------------------- link


def test_tampered_frame_is_dropped_and_counted() -> None:
    terminal, pos = paired()
    frame = json.loads(pos.frame("ping"))
    frame["hmac"] = ("A" if frame["hmac"][0] != "A" else "B") + frame["hmac"][1:]
    terminal.receive_text(json.dumps(frame), T0)
    assert [] == terminal.data_to_send()
    [event] = terminal.events_received()
    assert (
        FrameRejected(reason=RejectReason.INVALID_SIGNATURE, detail="hmac does not match") == event
    )
    assert 1 == terminal.counters.frames_rejected


def test_hmac_is_compared_case_insensitively() -> None:
    terminal, pos = paired()
    frame = json.loads(pos.frame("ping", msg_id="ping7"))
    frame["hmac"] = frame["hmac"].lower()
    [pong] = exchange(terminal, pos, json.dumps(frame))
    assert ("pong", "ping7") == (pong.event, pong.id)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_ping_is_answered_with_pong_same_id_datetime_and_conn_id(generation: Generation) -> None:
    terminal, pos = paired(generation)
    [pong] = exchange(terminal, pos, pos.frame("ping", msg_id="ping563"))
    assert ("pong", "ping563", "C1") == (pong.event, pong.id, pong.conn_id)
    assert pong.datetime is not None
    assert not pong.datetime.endswith("Z")
    assert pong.data is None


def test_terminal_frames_use_upper_case_enc_and_hmac_and_no_pos_id() -> None:
    terminal, pos = paired()
    terminal.receive_text(pos.frame("ping"), T0)
    [frame] = terminal.data_to_send()
    outer = json.loads(frame)
    assert ["enc", "hmac"] == list(outer)
    assert outer["enc"].upper() == outer["enc"]
    assert outer["hmac"].upper() == outer["hmac"]


def test_each_connection_gets_its_own_conn_id() -> None:
    terminal, pos = paired()
    terminal.connection_lost(T0)
    terminal.connection_made(T0 + 2)
    [pong] = exchange(terminal, pos, pos.frame("ping"))
    assert "C2" == pong.conn_id


def test_pong_delay_holds_the_pong_until_the_deadline() -> None:
    terminal, pos = paired(pong_delay=6.0)
    assert [] == exchange(terminal, pos, pos.frame("ping", msg_id="ping9"))
    assert T0 + 6.0 == terminal.next_deadline()
    terminal.handle_timer(T0 + 6.0)
    [pong] = pos.read(terminal.data_to_send())
    assert "ping9" == pong.id


def test_terminal_pings_and_closes_after_two_missed_pongs() -> None:
    terminal, pos = paired(ping_interval=18.0)
    assert T0 + 18.0 == terminal.next_deadline()
    terminal.handle_timer(T0 + 18.0)
    [ping] = pos.read(terminal.data_to_send())
    assert "ping" == ping.event
    terminal.receive_text(pos.frame("pong", msg_id=ping.id), T0 + 18.5)
    assert [] == terminal.events_received()
    terminal.handle_timer(T0 + 36.0)
    terminal.data_to_send()
    terminal.handle_timer(T0 + 41.0)  # first miss: ping again at once
    [again] = pos.read(terminal.data_to_send())
    assert "ping" == again.event
    terminal.handle_timer(T0 + 46.0)
    assert [CloseConnection(reason="the POS did not answer pings")] == only(
        terminal.events_received(), CloseConnection
    )


def test_pos_id_in_the_url_that_differs_from_the_paired_one_is_reported() -> None:
    terminal, _ = paired()
    terminal.connection_lost(T0)
    terminal.connection_made(T0, subprotocol="spi.2.9.0", query_pos_id="OTHER")
    assert [PosIdMismatch(expected="POS1", received="OTHER", where="url")] == (
        terminal.events_received()
    )


def test_plain_message_after_pairing_is_rejected() -> None:
    terminal, _pos = paired()
    terminal.receive_text(
        json.dumps({"message": {"id": "p1", "event": "ping", "pos_id": "POS1"}}), T0
    )
    [event] = terminal.events_received()
    assert isinstance(event, FrameRejected)
    assert "plain_after_pairing" == event.reason


# ---------------------------------------------------------------- transactions


@pytest.mark.parametrize("generation", GENERATIONS)
def test_purchase_approved_echoes_id_and_pos_ref_id_with_real_fields(
    generation: Generation,
) -> None:
    terminal, pos = paired(generation)
    terminal.receive_text(purchase(pos, "order-1", 1234, tip_amount=100), T0)
    [requested] = terminal.events_received()
    assert isinstance(requested, TransactionRequested)
    assert isinstance(requested.tx.request, m.PurchaseRequest)
    assert ("order-1", 1234, 100) == (
        requested.tx.pos_ref_id,
        requested.tx.request.purchase_amount,
        requested.tx.request.tip_amount,
    )
    assert TxState.CARD_PENDING == terminal.tx_state
    terminal.pass_point_of_no_return(T0)
    terminal.complete_transaction(Outcome.approve(), T0 + 1)
    [response] = pos.read(terminal.data_to_send())
    assert ("purchase_response", requested.tx.message_id) == (response.event, response.id)
    data = response.data or {}
    template = load_fixture("PurchaseResponse.json")["message"]["data"]
    assert set() == set(template) - set(data)
    assert (True, "order-1", "000", "APPROVED") == (
        data["success"],
        data["pos_ref_id"],
        data["host_response_code"],
        data["host_response_text"],
    )
    assert (1234, 100, 1334) == (
        data["purchase_amount"],
        data["tip_amount"],
        data["bank_noncash_amount"],
    )
    assert "\r\n" in data["customer_receipt"]
    [finished] = terminal.events_received()
    assert isinstance(finished, TransactionFinished)
    assert (True, True) == (finished.record.success, finished.record.sent)
    # mypy keeps "tx_state is CARD_PENDING" from above across the calls since.
    assert TxState.IDLE == terminal.tx_state  # type: ignore[comparison-overlap]


def test_purchase_declined_carries_host_code_and_error_reason() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, amount=1051), T0)
    terminal.complete_transaction(Outcome.decline(), T0)
    [response] = pos.read(terminal.data_to_send())
    data = response.data or {}
    assert (False, "51", "DECLINED", "HOST_DECLINED") == (
        data["success"],
        data["host_response_code"],
        data["host_response_text"],
        data["error_reason"],
    )


def test_partial_approval_reports_the_approved_amount() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, amount=1056), T0)
    terminal.complete_transaction(Outcome.partial(528), T0)
    [response] = pos.read(terminal.data_to_send())
    data = response.data or {}
    assert (True, "002", 528) == (
        data["success"],
        data["host_response_code"],
        data["purchase_amount"],
    )


def test_second_transaction_while_busy_fails_with_operation_in_progress() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1"), T0)
    [busy] = exchange(terminal, pos, pos.frame("refund", {"pos_ref_id": "r-1", "refund_amount": 5}))
    assert "refund_response" == busy.event
    assert {
        "pos_ref_id": "r-1",
        "success": False,
        "error_reason": "OPERATION_IN_PROGRESS",
        "error_detail": "Payment interface is busy, cannot process operation at this time",
    } == busy.data
    events = terminal.events_received()
    assert ["order-1", "r-1"] == [
        e.tx.pos_ref_id if isinstance(e, TransactionRequested) else e.pos_ref_id
        for e in events
        if isinstance(e, TransactionRequested | TransactionRefused)
    ]
    assert "order-1" == (terminal.current_tx.pos_ref_id if terminal.current_tx else None)


def test_transaction_without_pos_ref_id_is_refused() -> None:
    terminal, pos = paired()
    [response] = exchange(terminal, pos, pos.frame("purchase", {"purchase_amount": 100}))
    assert "MISSING_ARGUMENTS" == (response.data or {})["error_reason"]


def test_transaction_request_is_read_as_the_message_catalogue_reads_it() -> None:
    """ "+5" is 5 cents and "true" a flag, as on the POS side (messages.as_int / as_bool)."""
    terminal, pos = paired()
    data = {"pos_ref_id": "order-1", "purchase_amount": "+5", "print_merchant_copy": "true"}
    terminal.receive_text(pos.frame("purchase", data), T0)
    [requested] = terminal.events_received()
    assert isinstance(requested, TransactionRequested)
    expected = m.PurchaseRequest(
        pos_ref_id="order-1",
        purchase_amount=5,
        config=m.PrintingConfig(print_merchant_copy=True),
    )
    assert expected == requested.tx.request


@pytest.mark.parametrize(
    "data",
    [
        {"pos_ref_id": "order-1"},
        {"pos_ref_id": "order-1", "purchase_amount": "ten"},
        {"pos_ref_id": "order-1", "purchase_amount": -5},
        {"pos_ref_id": "order-1", "purchase_amount": 100, "tip_amount": 5, "cash_amount": 5},
    ],
)
def test_transaction_request_the_catalogue_cannot_read_is_refused(data: dict[str, Any]) -> None:
    terminal, pos = paired()
    [response] = exchange(terminal, pos, pos.frame("purchase", data))
    assert ("purchase_response", False, "order-1", "INVALID_ARGUMENTS") == (
        response.event,
        response.get("success"),
        response.get("pos_ref_id"),
        response.get("error_reason"),
    )
    [refused] = terminal.events_received()
    assert (
        TransactionRefused(
            pos_ref_id="order-1", request="purchase", error_reason="INVALID_ARGUMENTS"
        )
        == refused
    )
    assert terminal.current_tx is None


def gt(terminal: Terminal, pos: FakePos, data: dict[str, Any] | None) -> Message:
    [response] = exchange(terminal, pos, pos.frame("get_transaction", data, msg_id="gt19"))
    assert ("get_transaction_response", "gt19") == (response.event, response.id)
    return response


def test_get_transaction_reports_the_current_transaction_states() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1"), T0)
    assert "TRANSACTION_IN_PROGRESS" == gt(terminal, pos, {"pos_ref_id": "order-1"}).get(
        "error_reason"
    )
    assert "OPERATION_IN_PROGRESS" == gt(terminal, pos, {"pos_ref_id": "other"}).get("error_reason")
    terminal.require_signature(T0)
    [signature_required] = pos.read(terminal.data_to_send())
    assert "signature_required" == signature_required.event
    assert "TRANSACTION_IN_PROGRESS_AWAITING_SIGNATURE" == gt(
        terminal, pos, {"pos_ref_id": "order-1"}
    ).get("error_reason")


def test_get_transaction_reports_awaiting_phone_auth_code() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1"), T0)
    terminal.require_auth_code(T0)
    terminal.data_to_send()
    response = gt(terminal, pos, {"pos_ref_id": "order-1"})
    assert "TRANSACTION_IN_PROGRESS_AWAITING_PHONE_AUTH_CODE" == response.get("error_reason")


def test_get_transaction_argument_errors_and_not_found() -> None:
    terminal, pos = paired()
    cases: dict[str, dict[str, Any]] = {
        "POS_REF_ID_NOT_FOUND": {"pos_ref_id": "nope"},
        "INVALID_ARGUMENTS": {"pos_ref_id": 17},
        "MISSING_ARGUMENTS": {},
    }
    for reason, data in cases.items():
        response = gt(terminal, pos, data)
        assert (False, reason) == (response.get("success"), response.get("error_reason")), reason
    assert "MISSING_ARGUMENTS" == gt(terminal, pos, None).get("error_reason")


def test_get_transaction_finds_a_transaction_finished_while_disconnected() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-9", 999), T0)
    terminal.connection_lost(T0 + 1)
    terminal.complete_transaction(Outcome.approve(), T0 + 2)
    [finished] = only(terminal.events_received(), TransactionFinished)
    assert (False, True) == (finished.record.sent, finished.record.success)
    terminal.connection_made(T0 + 3)
    response = gt(terminal, pos, {"pos_ref_id": "order-9"})
    assert (True, "order-9") == (response.get("success"), response.get("pos_ref_id"))
    assert finished.record.data == response.get("tx")


def test_result_produced_but_not_sent_is_recoverable() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-58", 1058), T0)
    terminal.complete_transaction(Outcome.approve(), T0, send=False)
    assert [] == terminal.data_to_send()
    assert True is gt(terminal, pos, {"pos_ref_id": "order-58"}).get("success")


def test_history_keeps_the_most_recent_transactions() -> None:
    terminal, pos = paired()
    for i in range(HISTORY_LIMIT + 3):
        terminal.receive_text(purchase(pos, f"order-{i}", 100 + i), T0)
        terminal.complete_transaction(Outcome.approve(), T0)
    terminal.data_to_send()
    assert "POS_REF_ID_NOT_FOUND" == gt(terminal, pos, {"pos_ref_id": "order-0"}).get(
        "error_reason"
    )
    assert True is gt(terminal, pos, {"pos_ref_id": "order-3"}).get("success")
    assert HISTORY_LIMIT == len(terminal.state.history)


def glt(terminal: Terminal, pos: FakePos) -> Message:
    [response] = exchange(terminal, pos, pos.frame("get_last_transaction", msg_id="glt18"))
    assert ("last_transaction", "glt18") == (response.event, response.id)
    return response


def test_get_last_transaction_variants() -> None:
    terminal, pos = paired()
    assert load_fixture("GetLastTransactionResponse_NoTransactions.json")["message"]["data"] == (
        glt(terminal, pos).data
    )
    terminal.receive_text(purchase(pos, "order-1"), T0)
    assert "OPERATION_IN_PROGRESS" == glt(terminal, pos).get("error_reason")
    terminal.complete_transaction(Outcome.approve(), T0)
    [response] = pos.read(terminal.data_to_send())
    last = glt(terminal, pos)
    assert response.data == last.data
    assert "order-1" == last.get("pos_ref_id")  # flat, not nested


def test_cancel_when_idle_answers_error_no_transaction() -> None:
    terminal, pos = paired()
    [error] = exchange(terminal, pos, pos.frame("cancel_transaction", msg_id="ctx17"))
    assert ("error", "ctx17", "NO_TRANSACTION") == (
        error.event,
        error.id,
        error.get("error_reason"),
    )


def test_cancel_before_point_of_no_return_then_failed_response_511() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1"), T0)
    cancel_response, purchase_response = exchange(terminal, pos, pos.frame("cancel_transaction"))
    assert ("cancel_response", {"success": True, "pos_ref_id": "order-1"}) == (
        cancel_response.event,
        cancel_response.data,
    )
    data = purchase_response.data or {}
    assert ("purchase_response", False, "511", "TRANS CANCELLED") == (
        purchase_response.event,
        data["success"],
        data["host_response_code"],
        data["host_response_text"],
    )
    assert TxState.IDLE == terminal.tx_state


def test_cancel_after_point_of_no_return_fails() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1"), T0)
    terminal.pass_point_of_no_return(T0)
    [cancel_response] = exchange(terminal, pos, pos.frame("cancel_transaction"))
    assert {
        "success": False,
        "pos_ref_id": "order-1",
        "error_reason": "TXN_PAST_POINT_OF_NO_RETURN",
        "error_detail": "Txn has passed the point of no return",
    } == cancel_response.data
    assert TxState.PROCESSING == terminal.tx_state


def test_cancel_completion_can_be_delayed_past_the_pos_limits() -> None:
    terminal, pos = paired(cancel_completion_delay=12.0)
    terminal.receive_text(purchase(pos, "order-1"), T0)
    [cancel_response] = exchange(terminal, pos, pos.frame("cancel_transaction"))
    assert True is cancel_response.get("success")
    assert T0 + 12.0 == terminal.next_deadline()
    terminal.handle_timer(T0 + 12.0)
    [late] = pos.read(terminal.data_to_send())
    assert ("purchase_response", "511") == (late.event, late.get("host_response_code"))


def test_cancel_can_go_unanswered() -> None:
    terminal, pos = paired(answer_cancel=False)
    terminal.receive_text(purchase(pos, "order-1"), T0)
    assert [] == exchange(terminal, pos, pos.frame("cancel_transaction"))
    assert [CancelRequested(pos_ref_id="order-1", accepted=False)] == only(
        terminal.events_received(), CancelRequested
    )


@pytest.mark.parametrize("generation", [Generation.V28, Generation.V29])
def test_signature_accept_with_pos_ref_id_data(generation: Generation) -> None:
    terminal, pos = paired(generation)
    terminal.receive_text(purchase(pos, "order-1"), T0)
    terminal.require_signature(T0)
    [required] = pos.read(terminal.data_to_send())
    assert "order-1" == required.get("pos_ref_id")
    assert "\r\n" in required.get("merchant_receipt")
    terminal.events_received()
    terminal.receive_text(pos.frame("signature_accept", {"pos_ref_id": "order-1"}), T0)
    assert [SignatureDecided(accepted=True, pos_ref_id="order-1")] == terminal.events_received()
    terminal.complete_transaction(Outcome.approve(), T0)
    [response] = pos.read(terminal.data_to_send())
    assert True is response.get("success")


def test_signature_decline_java_style_reuses_the_signature_required_id() -> None:
    terminal, pos = paired(Generation.V26)
    terminal.receive_text(purchase(pos, "order-1"), T0)
    terminal.require_signature(T0)
    [required] = pos.read(terminal.data_to_send())
    terminal.events_received()
    terminal.receive_text(pos.frame("signature_decline", msg_id=required.id), T0)
    assert [SignatureDecided(accepted=False, pos_ref_id="order-1")] == terminal.events_received()


def test_signature_answer_when_not_awaited_is_ignored() -> None:
    terminal, pos = paired()
    assert [] == exchange(terminal, pos, pos.frame("signature_accept", {"pos_ref_id": "x"}))
    [event] = terminal.events_received()
    assert "unexpected_message" == event.type


def test_auth_code_advice_completes_with_the_code() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1", 1053), T0)
    terminal.require_auth_code(T0)
    [required] = pos.read(terminal.data_to_send())
    assert ("authorisation_code_required", "order-1") == (
        required.event,
        required.get("pos_ref_id"),
    )
    assert required.get("auth_centre_phone_number")
    terminal.events_received()
    advice = pos.frame(
        "authorisation_code_advice", {"pos_ref_id": "order-1", "auth_code": "AB1234"}
    )
    terminal.receive_text(advice, T0)
    [received] = terminal.events_received()
    assert AuthCodeReceived(code="AB1234", pos_ref_id="order-1") == received
    terminal.complete_transaction(Outcome.approve(auth_code="AB1234"), T0)
    [response] = pos.read(terminal.data_to_send())
    assert "AB1234" == response.get("auth_code")


def test_txn_update_message_carries_the_display_text() -> None:
    terminal, pos = paired()
    terminal.receive_text(purchase(pos, "order-1"), T0)
    terminal.send_txn_update("PRESENT CARD", T0, code=3)
    [update] = pos.read(terminal.data_to_send())
    assert ("txn_update_message", "PRESENT CARD", 3) == (
        update.event,
        update.get("display_message_text"),
        update.get("display_message_code"),
    )


# ---------------------------------------------------------------- other requests


def run(terminal: Terminal, pos: FakePos, event: str, data: dict[str, Any] | None) -> Message:
    terminal.receive_text(pos.frame(event, data), T0)
    terminal.complete_transaction(Outcome.approve(), T0)
    [response] = pos.read(terminal.data_to_send())
    return response


def test_settlement_numbers_are_strings_and_settle_resets_the_batch() -> None:
    terminal, pos = paired()
    run(terminal, pos, "purchase", {"pos_ref_id": "p1", "purchase_amount": 200})
    run(terminal, pos, "refund", {"pos_ref_id": "r1", "refund_amount": 100})
    enquiry = run(terminal, pos, "settlement_enquiry", {})
    assert ("settlement_enquiry_response", "2", "100") == (
        enquiry.event,
        enquiry.get("accumulated_total_count"),
        enquiry.get("accumulated_total_value"),
    )
    template = load_fixture("SettleResponse.json")["message"]["data"]
    settle = run(terminal, pos, "settle", {})
    assert set() == set(template) - set(settle.data or {})
    assert ("941", "CUTOVER COMPLETE") == (
        settle.get("host_response_code"),
        settle.get("host_response_text"),
    )
    assert all(isinstance(s["total_count"], str) for s in settle.get("schemes"))
    assert "0" == run(terminal, pos, "settlement_enquiry", {}).get("accumulated_total_count")


def test_preauth_family_keeps_balances_by_preauth_id() -> None:
    terminal, pos = paired()
    opened = run(terminal, pos, "preauth", {"pos_ref_id": "pa-1", "preauth_amount": 10000})
    pid = opened.get("preauth_id")
    assert ("preauth_response", "PRE-AUTH", 10000) == (
        opened.event,
        opened.get("transaction_type"),
        opened.get("preauth_amount"),
    )
    topup = run(
        terminal,
        pos,
        "preauth_topup",
        {"pos_ref_id": "pa-2", "preauth_id": pid, "topup_amount": 2000},
    )
    assert (10000, 12000) == (topup.get("existing_preauth_amount"), topup.get("balance_amount"))
    partial = run(
        terminal,
        pos,
        "preauth_partial_cancellation",
        {"pos_ref_id": "pa-3", "preauth_id": pid, "preauth_cancel_amount": 500},
    )
    assert 11500 == partial.get("balance_amount")
    done = run(
        terminal,
        pos,
        "completion",
        {"pos_ref_id": "pa-4", "preauth_id": pid, "completion_amount": 9000},
    )
    assert (True, "PCOMP") == (done.get("success"), done.get("transaction_type"))
    again = run(terminal, pos, "preauth_extend", {"pos_ref_id": "pa-5", "preauth_id": pid})
    assert (False, "PRE_AUTH_ID_ALREADY_COMPLETED") == (
        again.get("success"),
        again.get("error_reason"),
    )


def test_reversal_of_a_known_transaction_succeeds_unknown_fails() -> None:
    terminal, pos = paired()
    run(terminal, pos, "purchase", {"pos_ref_id": "p1", "purchase_amount": 200})
    ok = run(terminal, pos, "reverse_transaction", {"pos_ref_id": "p1"})
    assert {"pos_ref_id": "p1", "success": True} == ok.data
    bad = run(terminal, pos, "reverse_transaction", {"pos_ref_id": "nope"})
    assert ("reverse_transaction_response", "INTERNAL_ERROR") == (
        bad.event,
        bad.get("error_reason"),
    )
    assert True is gt(terminal, pos, {"pos_ref_id": "p1"}).get("success")


def test_zip_purchase_echoes_zip_data() -> None:
    terminal, pos = paired()
    response = run(
        terminal,
        pos,
        "purchase_zip",
        {"pos_ref_id": "z1", "purchase_amount": 1000, "zip_data": {"store_code": "ABC"}},
    )
    assert ("purchase_zip_response", "TRANS APPROVED", "ABC") == (
        response.event,
        response.get("host_response_text"),
        response.get("zip_data")["store_code"],
    )


@pytest.mark.parametrize("model", ["E355", "CM5", "SIM-T1"])
def test_status_configuration_pos_info_and_print(model: str) -> None:
    terminal, pos = paired(terminal_model=model)
    [status] = exchange(terminal, pos, pos.frame("get_terminal_status", {}))
    assert ("terminal_status", True) == (status.event, status.get("success"))
    [config] = exchange(terminal, pos, pos.frame("get_terminal_configuration", {}))
    assert ("SIM-0001", model) == (config.get("serial_number"), config.get("terminal_model"))
    info = {"pos_vendor_id": "acme", "pos_version": "1.0"}
    [info_response] = exchange(terminal, pos, pos.frame("set_pos_info", info))
    assert ("set_pos_info_response", {"success": True}) == (
        info_response.event,
        info_response.data,
    )
    assert [PosInfoReceived(data=info)] == terminal.events_received()
    [printed] = exchange(terminal, pos, pos.frame("print", {"key": "k", "payload": "Hi"}))
    assert ("print_response", model == "SIM-T1") == (printed.event, printed.get("success"))


def test_battery_advice_and_spi_token_go_out_encrypted() -> None:
    terminal, pos = paired()
    terminal.send_battery_level(42, T0)
    terminal.send_pos_spi_token("tok-1234", T0)
    battery, token = pos.read(terminal.data_to_send())
    assert ("battery_level_changed", 42) == (battery.event, battery.get("battery_level"))
    assert ("provision_pos_spi_token", "tok-1234") == (
        token.event,
        token.get("pos_spi_auth_token"),
    )


# ---------------------------------------------------------------- key rollover


def test_key_rollover_switches_after_a_valid_reply_under_the_new_keys() -> None:
    vector = load_vector("key_rollover.json")["cases"][0]
    old = Secrets(enc_key=vector["old_EncKey"], hmac_key=vector["old_HmacKey"])
    terminal = Terminal(
        state=TerminalState(serial_number="SIM-0001", pos_id="POS1", secrets=old), responder=Bank
    )
    pos = FakePos()
    pos.stamp.secrets = old
    terminal.connection_made(T0, subprotocol="spi.2.9.0")
    terminal.start_key_rollover(T0)
    [request] = pos.read(terminal.data_to_send())
    assert "request_use_next_keys" == request.event
    assert terminal.key_rollover_pending
    pos.stamp.secrets = old.rolled()  # §5.7: the POS switches, then replies
    reply = pos.frame("response_use_next_keys", {"status": "confirmed"}, msg_id=request.id)
    terminal.receive_text(reply, T0)
    [rolled] = terminal.events_received()
    assert isinstance(rolled, KeysRolled)
    new = Secrets(enc_key=vector["new_EncKey"], hmac_key=vector["new_HmacKey"])
    assert terminal.state.secrets is not None
    assert terminal.state.secrets.same_as(new)
    [pong] = exchange(terminal, pos, pos.frame("ping", msg_id="ping1"))
    assert "pong" == pong.event


def test_key_rollover_without_switch_stays_on_the_old_keys() -> None:
    terminal, pos = paired()
    old = pos.secrets
    assert old is not None
    terminal.start_key_rollover(T0, switch=False)
    [request] = pos.read(terminal.data_to_send())
    pos.stamp.secrets = old.rolled()
    terminal.receive_text(
        pos.frame("response_use_next_keys", {"status": "confirmed"}, msg_id=request.id), T0
    )
    [rejected] = terminal.events_received()
    assert (
        FrameRejected(reason=RejectReason.INVALID_SIGNATURE, detail="hmac does not match")
        == rejected
    )
    assert terminal.state.secrets is not None
    assert terminal.state.secrets.same_as(old)
    pos.stamp.secrets = old  # a 2.9.2 POS swaps back: the old keys still work
    [pong] = exchange(terminal, pos, pos.frame("ping"))
    assert "pong" == pong.event


def test_key_rollover_reply_lost_with_the_connection_keeps_the_old_keys() -> None:
    terminal, pos = paired()
    old = pos.secrets
    terminal.start_key_rollover(T0)
    terminal.data_to_send()
    terminal.connection_lost(T0)
    assert not terminal.key_rollover_pending
    assert terminal.state.secrets == old


# ---------------------------------------------------------------- persistence


def test_terminal_state_round_trips_through_json_and_keeps_serving() -> None:
    terminal, pos = paired()
    run(terminal, pos, "purchase", {"pos_ref_id": "p1", "purchase_amount": 200})
    run(terminal, pos, "preauth", {"pos_ref_id": "pa-1", "preauth_amount": 500})
    text = orjson.dumps(terminal.state.to_json())
    restored = TerminalState.from_json(orjson.loads(text))
    assert terminal.state == restored
    assert terminal.state_version > 0
    again = Terminal(state=restored, responder=Bank)
    assert PairingState.PAIRED == again.pairing_state
    again.connection_made(T0 + 60, subprotocol="spi.2.8.0")
    assert True is gt(again, pos, {"pos_ref_id": "p1"}).get("success")
    assert "C1" == exchange(again, pos, pos.frame("ping"))[0].conn_id


# ---------------------------------------------------------------- robustness

POS_EVENTS = [
    "pair_request",
    "key_response",
    "drop_keys",
    "ping",
    "pong",
    "purchase",
    "refund",
    "cash",
    "moto_purchase",
    "settle",
    "cancel_transaction",
    "get_transaction",
    "get_last_transaction",
    "signature_accept",
    "signature_decline",
    "authorisation_code_advice",
    "reverse_transaction",
    "preauth",
    "preauth_topup",
    "completion",
    "purchase_zip",
    "print",
    "set_pos_info",
    "get_terminal_status",
    "response_use_next_keys",
    "no_such_event",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "pos_ref_id",
        "purchase_amount",
        "refund_amount",
        "preauth_id",
        "auth_code",
        "enc",
        "hmac",
        "zip_data",
        "print_merchant_copy",
        "customer_receipt_header",
    ]
)
message_data = st.none() | st.dictionaries(
    field_names | st.text(max_size=8), json_values, max_size=5
)


def _survives(terminal: Terminal, frame: str | bytes) -> None:
    # Anything the POS sends is survived without an exception: the caller
    # would otherwise have to guess whose fault it was.
    terminal.receive_text(frame, T0)
    terminal.data_to_send()
    terminal.events_received()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text() | st.binary() | json_values.map(lambda v: json.dumps(v)))
def test_random_text_bytes_and_json_are_survived_without_raising(frame: str | bytes) -> None:
    terminal, _ = paired()
    _survives(terminal, frame)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(POS_EVENTS), message_data, st.booleans()), max_size=6),
    st.sampled_from(GENERATIONS),
)
def test_random_well_signed_messages_in_any_state_are_survived(
    steps: list[tuple[str, dict[str, Any] | None, bool]], generation: Generation
) -> None:
    terminal, pos = paired(generation)
    for event, data, busy in steps:
        if busy and terminal.current_tx is None:
            terminal.receive_text(purchase(pos, "busy"), T0)
        _survives(terminal, pos.frame(event, data))
        if terminal.current_tx is not None and not busy:
            terminal.complete_transaction(Outcome.approve(), T0)
