"""The POS session replays the 2.9.13 client's own runs byte for byte (§4, §5, §13)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from multipair.spi import messages as m
from multipair.spi.crypto import Secrets
from multipair.spi.envelope import decode_frame
from multipair.spi.pos import (
    Outcome,
    PairingFinished,
    PairingProgress,
    PosInfo,
    PosSession,
    PosSpiTokenReceived,
    SecretsChanged,
    SpiStatus,
    TransactionCompleted,
)
from tests.spi.helpers import VECTOR_EPOCH, FixedCounter, epoch, terminal_frame
from tests.spi_shared import load_vector

VECTOR_POS_INFO = PosInfo(
    pos_vendor_id="VectorPOS",
    pos_version="1.0.0",
    library_version="2.9.13",
    library_language="js",
    device_system="vector-harness",
    spice_version=None,
)


def _paired_vector_session() -> tuple[PosSession, dict[str, Any]]:
    vec = load_vector("v29_pairing.json")
    keys = iter([int(vec["private_key_enc_hex"], 16), int(vec["private_key_hmac_hex"], 16)])
    session = PosSession(
        pos_id="POS1",
        pos_info=VECTOR_POS_INFO,
        rng=FixedCounter(50050),
        private_key_factory=lambda: next(keys),
        request_id_start=1,  # the vectors' ids count from 1, as the JS client's do
    )
    now = VECTOR_EPOCH
    session.pair(now)
    session.connection_made(now)
    assert [vec["pair_request_json"]] == session.data_to_send()
    session.receive_text(vec["key_request_json"], now)
    assert [vec["key_response_json"]] == session.data_to_send()
    session.receive_text(vec["key_check"]["envelope_json"], now)
    progress = [e for e in session.events_received() if isinstance(e, PairingProgress)]
    assert vec["key_check"]["confirmation_code"] == progress[-1].confirmation_code
    session.pair_confirm(now)
    session.receive_text(vec["pair_response"]["envelope_json"], now)
    assert [vec["first_ping"]["envelope_json"]] == session.data_to_send()
    events = session.events_received()
    assert PairingFinished(success=True, message="Paired.") in events
    changed = [e for e in events if isinstance(e, SecretsChanged)]
    assert 1 == len(changed)
    assert changed[0].secrets is not None
    assert changed[0].secrets.same_as(Secrets(enc_key=vec["EncKey"], hmac_key=vec["HmacKey"]))
    assert SpiStatus.PAIRED_CONNECTED == session.status
    return session, vec


def test_pairing_is_byte_exact_with_the_2_9_13_client() -> None:
    _paired_vector_session()


def test_session_after_pairing_is_byte_exact_with_the_2_9_13_client() -> None:
    session, _ = _paired_vector_session()
    steps = load_vector("v29_session.json")["steps"]
    now = VECTOR_EPOCH

    # 0: first pong carries conn_id C1 -> set_pos_info + get_terminal_configuration
    session.receive_text(steps[0]["terminal_envelope_json"], now)
    assert steps[0]["pos_frames"] == session.data_to_send()

    # 1: purchase
    session.start_transaction(m.PurchaseRequest(pos_ref_id="order-2001", purchase_amount=1500), now)
    assert steps[1]["pos_frames"] == session.data_to_send()

    # 2: a response for another pos_ref_id is ignored (§13.9)
    session.receive_text(steps[2]["terminal_envelope_json"], now)
    assert not [e for e in session.events_received() if isinstance(e, TransactionCompleted)]
    assert "order-2001" == session.current_pos_ref_id

    # 3: the matching response completes it
    session.receive_text(steps[3]["terminal_envelope_json"], now)
    done = [e for e in session.events_received() if isinstance(e, TransactionCompleted)]
    assert [("order-2001", Outcome.SUCCESS, False)] == [
        (e.pos_ref_id, e.outcome, e.recovered) for e in done
    ]

    # 4: provision_pos_spi_token: handed over, never answered
    session.receive_text(steps[4]["terminal_envelope_json"], now)
    assert [PosSpiTokenReceived(token="tok-0123456789abcdef")] == [
        e for e in session.events_received() if isinstance(e, PosSpiTokenReceived)
    ]
    assert [] == session.data_to_send()

    # 5: terminal ping -> pong with the same id
    session.receive_text(steps[5]["terminal_envelope_json"], now)
    assert steps[5]["pos_frames"] == session.data_to_send()

    # 6: key roll: the reply waits until the new keys are persisted
    session.receive_text(steps[6]["terminal_envelope_json"], now)
    rolled = [e for e in session.events_received() if isinstance(e, SecretsChanged)]
    assert 1 == len(rolled)
    assert rolled[0].secrets is not None
    assert steps[6]["new_EncKey"] == rolled[0].secrets.enc_key
    assert steps[6]["new_HmacKey"] == rolled[0].secrets.hmac_key
    assert [] == session.data_to_send()
    session.secrets_persisted()
    assert steps[6]["pos_frames"] == session.data_to_send()


def test_old_keys_are_accepted_after_a_roll_only_until_the_new_keys_verify() -> None:
    """§13.6: a bounded fall-back, where 2.9.13 drops the stale frame outright."""
    session, _ = _paired_vector_session()
    steps = load_vector("v29_session.json")["steps"]
    now = VECTOR_EPOCH
    for index in (0, 6):
        session.receive_text(steps[index]["terminal_envelope_json"], now)
    session.secrets_persisted()
    session.events_received()
    stale = steps[7]["terminal_envelope_json"]
    session.receive_text(stale, now)
    assert [] == [e for e in session.events_received() if type(e).__name__ == "FrameRejected"]
    session.receive_text(steps[8]["terminal_envelope_json"], now)  # verifies under new keys
    session.events_received()
    session.receive_text(stale, now)
    assert ["FrameRejected"] == [type(e).__name__ for e in session.events_received()]


def test_get_table_config_is_always_answered_with_pay_at_table_off() -> None:
    """§13.14: 2.9.13 throws here; a POS written today answers."""
    session, vec = _paired_vector_session()
    steps = load_vector("v29_session.json")["steps"]
    now = VECTOR_EPOCH
    session.receive_text(steps[0]["terminal_envelope_json"], now)
    session.data_to_send()
    secrets = Secrets(enc_key=vec["EncKey"], hmac_key=vec["HmacKey"])
    session.receive_text(
        terminal_frame("get_table_config", "C1.13", secrets=secrets, conn_id="C1"), now
    )
    (frame,) = session.data_to_send()
    got = decode_frame(frame, secrets)
    assert got is not None
    message = json.loads(got.inner_text)["message"]  # type: ignore[union-attr]
    assert ("C1.13", "set_table_config", {"pay_at_table_enabled": False}) == (
        message["id"],
        message["event"],
        message["data"],
    )


def _connected_session(secrets: Secrets, now: float) -> PosSession:
    session = PosSession(pos_id="POS1", pos_info=VECTOR_POS_INFO, secrets=secrets)
    session.connection_made(now)
    (ping,) = session.data_to_send()
    ping_id = json.loads(decode_frame(ping, secrets).inner_text)["message"]["id"]  # type: ignore[union-attr]
    session.receive_text(terminal_frame("pong", ping_id, secrets=secrets, conn_id="C1"), now)
    session.data_to_send()
    session.events_received()
    return session


def _events_sent(session: PosSession, secrets: Secrets) -> list[str]:
    return [
        json.loads(decode_frame(f, secrets).inner_text)["message"]["event"]  # type: ignore[union-attr]
        for f in session.data_to_send()
    ]


@pytest.mark.parametrize("run_index", [0, 1, 2])
def test_cancel_gives_up_on_the_same_seconds_as_2_9_13(run_index: int) -> None:
    vec = load_vector("v29_cancel_timeline.json")
    run = vec["runs"][run_index]
    secrets = Secrets(enc_key="11" * 32, hmac_key="22" * 32)
    t0 = epoch(vec["t0"])
    session = _connected_session(secrets, t0)
    session.start_transaction(m.PurchaseRequest(pos_ref_id="order-1", purchase_amount=100), t0)
    assert ["purchase"] == _events_sent(session, secrets)
    last_gt_id = ""
    observed: list[tuple[float, str]] = []
    finished_at: float | None = None
    # Walk the clock in 0.5 s steps, acting where the vector's timeline acts.
    actions = {float(a["t_s"]): a for a in run["timeline"][1:]}
    t = 0.0
    while t <= 80 and finished_at is None:
        now = t0 + t
        action = actions.get(t)
        if action is not None and action["action"] == "CancelTransaction()":
            session.cancel_transaction(now)
        elif action is not None and action["action"] == "socket closed":
            session.connection_lost(now)
        elif action is not None and action["action"].startswith("terminal answers"):
            session.receive_text(
                terminal_frame(
                    "get_transaction_response",
                    last_gt_id,
                    {
                        "success": False,
                        "pos_ref_id": "order-1",
                        "error_reason": "TRANSACTION_IN_PROGRESS",
                        "error_detail": "Transaction in progress",
                    },
                    secrets=secrets,
                ),
                now,
            )
        deadline = session.next_deadline()
        if deadline is not None and deadline <= now:
            session.handle_timer(now)
        for frame in session.data_to_send():
            message = json.loads(decode_frame(frame, secrets).inner_text)["message"]  # type: ignore[union-attr]
            if message["event"] == "ping":
                # Keep the link healthy: the vector records only transaction traffic.
                if session.connected:
                    session.receive_text(
                        terminal_frame("pong", message["id"], secrets=secrets, conn_id="C1"), now
                    )
                continue
            observed.append((t, message["event"]))
            if message["event"] == "get_transaction":
                last_gt_id = message["id"]
        for event in session.events_received():
            if isinstance(event, TransactionCompleted):
                assert Outcome.UNKNOWN == event.outcome
                finished_at = t
        t += 0.5
    expected_sent = [(float(a["t_s"]), s) for a in run["timeline"][1:] for s in a.get("sent", [])]
    assert expected_sent == observed
    assert float(run["timeline"][-1]["t_s"]) == finished_at
