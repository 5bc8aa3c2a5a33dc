"""The terminal link cannot be lied to: no forged, replayed or redirected outcome.

Each test plays the attacker on the shop network against a paired POS session
(or terminal) in memory: it injects plaintext frames, replays signed frames
recorded earlier, and forges key exchanges. docs/security.md is the threat
model these tests pin down.
"""

from __future__ import annotations

import orjson
import pytest

from multipair.exceptions import CryptoError
from multipair.spi import messages as m
from multipair.spi import terminal as t
from multipair.spi.crypto import Secrets, hex_to_bytes, parse_public_key
from multipair.spi.envelope import RejectReason, decode_frame
from multipair.spi.pos import (
    FrameRejected,
    IgnoredMessage,
    Outcome,
    PairingFinished,
    PosSession,
    SecretsChanged,
    SpiStatus,
)
from tests.spi.helpers import TEST_POS_INFO, terminal_frame
from tests.spi.test_sessions import Pair


def _plain(event: str, msg_id: str, data: dict[str, object] | None = None) -> str:
    return terminal_frame(event, msg_id, data, secrets=None)


def _signed(pair: Pair, event: str, msg_id: str, data: dict[str, object] | None = None) -> str:
    """A frame signed with the link's keys, as the terminal (or a replay of it) would send."""
    keys = pair.pos.secrets
    assert keys is not None
    return terminal_frame(event, msg_id, data, secrets=keys)


def _inject(pair: Pair, frame: str) -> list[object]:
    """Deliver one frame to the POS as if the terminal had sent it; return its events."""
    pair.pos.receive_text(frame, pair.now)
    events = pair.pos.events_received()
    pair.pos_events.extend(events)
    return list(events)


def _approval(pos_ref_id: str, cents: int) -> dict[str, object]:
    return {
        "success": True,
        "pos_ref_id": pos_ref_id,
        "purchase_amount": cents,
        "host_response_code": "000",
        "host_response_text": "APPROVED",
    }


def _started(pair: Pair, ref: str, cents: int) -> None:
    """A purchase sent to the terminal, the card not yet presented."""
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id=ref, purchase_amount=cents), pair.now)
    pair.pump()
    assert [ref] == [tx.pos_ref_id for tx in pair.requested()][-1:]
    assert ref == pair.pos.current_pos_ref_id


def _only_rejections(events: list[object]) -> None:
    assert events, "the frame left no trace"
    assert all(isinstance(e, FrameRejected) for e in events), events
    assert all(e.reason is RejectReason.INVALID_SIGNATURE for e in events)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# After keys exist, only authenticated frames count


def test_plaintext_purchase_approval_does_not_complete_the_running_purchase() -> None:
    pair = Pair.paired()
    _started(pair, "mitm-1", 99_900)
    _only_rejections(
        _inject(pair, _plain("purchase_response", "prchs1", _approval("mitm-1", 99_900)))
    )
    assert "mitm-1" == pair.pos.current_pos_ref_id
    assert [] == pair.completed()
    # The terminal's true outcome still lands.
    pair.terminal.complete_transaction(t.Outcome.decline(), pair.now)
    pair.pump()
    (done,) = pair.completed()
    assert (Outcome.FAILED, "mitm-1") == (done.outcome, done.pos_ref_id)


def test_plaintext_drop_keys_does_not_unpair() -> None:
    pair = Pair.paired()
    keys = pair.pos.secrets
    _only_rejections(_inject(pair, _plain("drop_keys", "C9.1")))
    assert SpiStatus.PAIRED_CONNECTED == pair.pos.status
    assert pair.pos.secrets is keys
    assert pair.linked
    assert [] == [e for e in pair.pos_events if isinstance(e, SecretsChanged)]


def test_plaintext_pong_does_not_make_the_link_ready() -> None:
    keys = Pair.paired().pos.secrets
    pos = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=keys)
    pos.connection_made(0.0)
    [(event, ping_id)] = [
        (g.message.event, g.message.id)  # type: ignore[union-attr]
        for g in (decode_frame(f, keys) for f in pos.data_to_send())
    ]
    assert "ping" == event
    pos.receive_text(_plain("pong", ping_id), 0.1)
    events = pos.events_received()
    _only_rejections(list(events))
    assert not pos.ready
    # The same pong, signed, does.
    assert keys is not None
    pos.receive_text(terminal_frame("pong", ping_id, secrets=keys, conn_id="C1"), 0.2)
    assert pos.ready


def test_plaintext_get_transaction_response_does_not_decide_a_recovery() -> None:
    pair = Pair.paired()
    # Reconnected: the POS asked get_transaction; the terminal still waits for the card.
    gt_id = _recovering(pair, "mitm-2", 500)
    forged = {"success": True, "pos_ref_id": "mitm-2", "tx": _approval("mitm-2", 500)}
    _only_rejections(_inject(pair, _plain("get_transaction_response", gt_id, forged)))
    assert "mitm-2" == pair.pos.current_pos_ref_id
    assert [] == pair.completed()


def test_the_only_plaintext_taken_with_keys_is_pair_response_while_confirming() -> None:
    pair = Pair.unpaired()
    pair.pos.pair(pair.now)
    pair.connect()  # pair_request, key_request, key_response, key_check: confirming now
    assert pair.pos.secrets is not None
    events = _inject(pair, _plain("pair_response", "C1.9", {"success": False}))
    assert [PairingFinished] == [type(e) for e in events if isinstance(e, PairingFinished)]
    # Once paired, the same plaintext is only a rejection.
    paired = Pair.paired()
    _only_rejections(_inject(paired, _plain("pair_response", "C1.9", {"success": False})))
    assert SpiStatus.PAIRED_CONNECTED == paired.pos.status


# ---------------------------------------------------------------------------
# Replies are bound to what they answer


def _record_lookup(pair: Pair, ref: str) -> str:
    """Run an explicit lookup of ``ref`` and capture the terminal's signed answer frame."""
    pair.pos.lookup_transaction(ref, pair.now)
    for frame in pair.pos.data_to_send():
        pair.terminal.receive_text(frame, pair.now)
    [answer] = pair.terminal.data_to_send()
    pair.pos.receive_text(answer, pair.now)
    pair.pos_events.extend(pair.pos.events_received())
    return answer


def _reconnect_holding_get_transaction(pair: Pair) -> str:
    """Reconnect, deliver everything but the POS's get_transaction; return its id."""
    pair.advance(1.5)
    pair.linked = True
    pair.pos.connection_made(pair.now)
    pair.terminal.connection_made(pair.now, subprotocol="spi.2.9.0", query_pos_id="POS1")
    held: list[str] = []
    for _ in range(50):
        pair.pos_events.extend(pair.pos.events_received())
        moved = False
        for frame in pair.pos.data_to_send():
            moved = True
            got = decode_frame(frame, pair.pos.secrets)
            if got.message.event == "get_transaction":  # type: ignore[union-attr]
                held.append(got.message.id)  # type: ignore[union-attr]
            else:
                pair.terminal.receive_text(frame, pair.now)
        for frame in pair.terminal.data_to_send():
            moved = True
            pair.pos.receive_text(frame, pair.now)
        pair.terminal_events.extend(pair.terminal.events_received())
        if not moved:
            break
    [gt_id] = held
    assert gt_id == pair.pos._tx.gt_request_id  # type: ignore[union-attr]
    return gt_id


def _recovering(pair: Pair, ref: str, cents: int) -> str:
    """A purchase cut by a disconnect and reconnected: returns the pending GT's id."""
    _started(pair, ref, cents)
    pair.disconnect()
    return _reconnect_holding_get_transaction(pair)


def test_an_old_signed_lookup_answer_replayed_does_not_complete_a_new_purchase() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="old-5", purchase_amount=500), pair.now)
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    recorded = _record_lookup(pair, "old-5")
    gt_id = _recovering(pair, "new-999", 99_900)
    events = _inject(pair, recorded)  # replayed verbatim: another id, another pos_ref_id
    assert [] == pair.completed()[1:]
    assert any(isinstance(e, IgnoredMessage) for e in events)
    # Re-aimed at the pending request's id (a colliding id), it still names old-5.
    inner = orjson.loads(decode_frame(recorded, pair.pos.secrets).inner_text)["message"]  # type: ignore[union-attr]
    events = _inject(pair, _signed(pair, "get_transaction_response", gt_id, inner["data"]))
    assert [IgnoredMessage] == [type(e) for e in events]
    assert "new-999" == pair.pos.current_pos_ref_id
    # The real answer decides it.
    pair.terminal.complete_transaction(t.Outcome.decline(), pair.now)
    pair.pump()
    done = pair.completed()[-1]
    assert (Outcome.FAILED, "new-999") == (done.outcome, done.pos_ref_id)


def test_a_lookup_answer_that_names_no_transaction_is_not_taken() -> None:
    pair = Pair.paired()
    gt_id = _recovering(pair, "anon-1", 700)
    not_found = {"success": False, "error_reason": "POS_REF_ID_NOT_FOUND"}
    events = _inject(pair, _signed(pair, "get_transaction_response", gt_id, not_found))
    assert [IgnoredMessage] == [type(e) for e in events]
    assert "anon-1" == pair.pos.current_pos_ref_id  # not failed: it may have been charged


def test_a_replay_from_an_earlier_process_does_not_complete_the_recovered_purchase() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.PurchaseRequest(pos_ref_id="old-6", purchase_amount=500), pair.now)
    pair.pump()
    pair.terminal.complete_transaction(t.Outcome.approve(), pair.now)
    pair.pump()
    recorded = _record_lookup(pair, "old-6")
    keys = pair.pos.secrets
    _started(pair, "new-6", 99_900)
    pair.disconnect()
    # The lane restarts: a new session from the stored keys recovers new-6.
    pair.pos = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=keys)
    pair.pos.recover("new-6", m.TxType.PURCHASE, pair.now)
    pair.advance(1.5)
    pair.connect()
    _inject(pair, recorded)
    assert "new-6" == pair.pos.current_pos_ref_id
    pair.terminal.complete_transaction(t.Outcome.decline(), pair.now)
    pair.pump()
    done = pair.completed()[-1]
    assert (Outcome.FAILED, "new-6", True) == (done.outcome, done.pos_ref_id, done.recovered)


def test_request_ids_start_unpredictably_per_session() -> None:
    keys = Pair.paired().pos.secrets
    starts = set()
    for _ in range(5):
        pos = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=keys)
        pos.connection_made(0.0)
        [ping] = pos.data_to_send()
        ping_id = decode_frame(ping, keys).message.id  # type: ignore[union-attr]
        assert ping_id.startswith("ping")
        starts.add(ping_id)
    assert 5 == len(starts)
    assert "ping1" not in starts


def test_a_pong_already_answered_is_not_taken_again() -> None:
    pair = Pair.paired()
    pair.advance(pair.pos.timings.ping_interval_s)  # a ping went out and was answered
    ping_id = pair.pos._last_ping_id
    assert ping_id is not None
    events = _inject(pair, _signed(pair, "pong", ping_id))
    assert [IgnoredMessage(event="pong", reason="that ping was answered")] == events


def test_a_settlement_response_must_echo_the_request_id() -> None:
    pair = Pair.paired()
    pair.pos.start_transaction(m.SettleRequest(), pair.now)
    pair.pos.data_to_send()  # held back from the terminal
    pair.pos.events_received()
    settle = {"success": True, "merchant_receipt": "OLD SETTLEMENT"}
    events = _inject(pair, _signed(pair, "settle_response", "settle42", settle))
    assert [IgnoredMessage] == [type(e) for e in events], events
    assert [] == pair.completed()


# ---------------------------------------------------------------------------
# Strict key exchange


@pytest.mark.parametrize(
    "value",
    ["0x1F", " 1F", "1F ", "1_F", "1F\n", "\u0661\u0662", "１Ｆ", "+1F", "-1F", "1" * 1025],
)
def test_dh_values_are_plain_hex_only(value: str) -> None:
    with pytest.raises(CryptoError):
        parse_public_key(value)


@pytest.mark.parametrize("value", ["ab cd", "0xabcd", "ab_cd", "abc", "\u0661\u0662", "ＡＢ"])
def test_hex_bytes_are_plain_hex_only(value: str) -> None:
    with pytest.raises(CryptoError):
        hex_to_bytes(value)


def test_a_key_request_with_non_plain_hex_fails_the_pairing_with_a_reason() -> None:
    pos = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO)
    pos.pair(0.0)
    pos.connection_made(0.0)
    pos.data_to_send()
    good = format(parse_public_key("2" * 10), "X")
    data: dict[str, object] = {"enc": {"A": "0x" + good}, "hmac": {"A": good}}
    pos.receive_text(_plain("key_request", "62", data), 0.1)
    [finished] = [e for e in pos.events_received() if isinstance(e, PairingFinished)]
    assert not finished.success
    assert "plain hex" in finished.message
    assert pos.secrets is None
    assert [] == pos.data_to_send()  # no key_response went out


# ---------------------------------------------------------------------------
# The terminal side obeys no plaintext either


def _paired_terminal() -> tuple[Pair, Secrets]:
    pair = Pair.paired()
    keys = pair.terminal.state.secrets
    assert keys is not None
    pair.terminal_events.clear()
    return pair, keys


def _pos_plain(event: str, data: dict[str, object] | None = None) -> str:
    body = {"message": {"id": "x1", "event": event, "data": data, "pos_id": "POS1"}}
    return orjson.dumps(body).decode()


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("purchase", {"pos_ref_id": "evil-1", "purchase_amount": 100}),
        ("drop_keys", None),
        ("pair_request", {"padding": True}),
        ("cancel_transaction", None),
    ],
)
def test_a_paired_terminal_obeys_no_plaintext(event: str, data: dict[str, object] | None) -> None:
    pair, keys = _paired_terminal()
    pair.terminal.receive_text(_pos_plain(event, data), pair.now)
    events = pair.terminal.events_received()
    assert [t.FrameRejected] == [type(e) for e in events]
    assert "plain_after_pairing" == events[0].reason  # type: ignore[union-attr]
    assert [] == pair.terminal.data_to_send()
    assert pair.terminal.state.secrets is keys
    assert t.PairingState.PAIRED == pair.terminal.pairing_state
    assert pair.terminal.current_tx is None
