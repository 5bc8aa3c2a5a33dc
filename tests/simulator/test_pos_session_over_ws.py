"""The POS session against the simulator over real websockets on loopback (issue 3).

:class:`~multipair.direct.DirectPos` (the session behind a thin asyncio
shell) talks to an in-process :class:`~multipair.simulator.Simulator`:
pairing, every transaction type, every scripted outcome of the cents table
(:mod:`multipair.simulator.rules`), recovery after a drop at each named step,
a POS restart and a key rollover. The control API is the terminal's side of
each story; its per-``pos_ref_id`` request counts prove no request was sent
twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from multipair.direct import DirectPos
from multipair.exceptions import RetryLater
from multipair.simulator import Simulator
from multipair.spi import messages as m
from multipair.spi.address import Timings
from multipair.spi.pos import (
    CancelFailed,
    CloseConnection,
    FrameRejected,
    LastTransactionResult,
    Outcome,
    PairingProgress,
    SecretsChanged,
    SignatureRequired,
    SpiStatus,
    StatusChanged,
    TerminalAnswer,
    TransactionCompleted,
    TransactionLookupResult,
    TransactionRequestSent,
    TransactionUpdate,
)
from tests.simulator.helpers import KEYS, Control

SERIAL = "SIM-0001"
TIMEOUT = 15.0  # any single wait; recoveries include the 1.5 s reconnect pause
SLOW_CARD_TEXTS = ["PRESENT CARD", "READING CARD", "PROCESSING", "PLEASE WAIT"]


def url_of(sim: Simulator) -> str:
    return f"{sim.terminals[0].ws_url}?posId=POS1"


def purchase(ref: str, amount: int, **extra: Any) -> m.PurchaseRequest:
    return m.PurchaseRequest(pos_ref_id=ref, purchase_amount=amount, **extra)


@pytest.fixture
def timings() -> tuple[float, float]:
    """Keep the timed behaviours short; the rules, not their length, are under test."""
    return 1.0, 1.0


@pytest.fixture
async def pos(sim: Simulator) -> AsyncIterator[DirectPos]:
    """A POS resumed from the stored keys, ready; it accepts signatures and knows a code."""
    async with DirectPos(
        url_of(sim),
        secrets=KEYS,
        on_signature=lambda event: True,
        on_auth_code=lambda event: "AB1234",
    ) as client:
        await client.wait_ready(TIMEOUT)
        yield client


async def requests_for(control: Control, ref: str, kind: str = "transaction") -> int:
    """How many ``kind`` requests (``transaction`` or ``purchase``) with this pos_ref_id
    the terminal received."""
    state = await control.get(SERIAL)
    return int(state[f"{kind}_requests"].get(ref, 0))


def host_code(done: TransactionCompleted) -> str | None:
    assert done.response is not None
    return done.response.host_response_code


# ---------------------------------------------------------------- pairing


async def test_pairing_shows_the_terminals_code_and_both_sides_hold_the_same_keys() -> None:
    async with (
        Simulator(1, pairing="manual") as sim,
        aiohttp.ClientSession() as http,
        DirectPos(url_of(sim)) as pos,
    ):
        control = Control(http, sim.control_url)
        async with asyncio.TaskGroup() as tasks:
            pairing = tasks.create_task(pos.pair(confirm=True, timeout=TIMEOUT))
            shown = await pos.wait_for(
                PairingProgress, lambda e: e.confirmation_code is not None, TIMEOUT
            )
            terminal = await control.get(SERIAL)
            assert ("awaiting_confirmation", shown.confirmation_code) == (
                terminal["pairing_state"],
                terminal["confirmation_code"],
            )
            await control.post(SERIAL, "pairing/confirm")
        assert shown.confirmation_code == pairing.result()
        await pos.wait_ready(TIMEOUT)
        assert pos.secrets is not None
        terminal = await control.get(SERIAL)
        assert (True, "POS1", pos.secrets.fingerprint()) == (
            terminal["paired"],
            terminal["pos_id"],
            terminal["keys_fingerprint"],
        )
        done = await pos.transact(purchase("after-pairing", 1000), TIMEOUT)
        assert Outcome.SUCCESS == done.outcome


# ---------------------------------------------------------------- every transaction type


SIMPLE_TRANSACTIONS: list[tuple[m.TransactionRequest, str]] = [
    (purchase("plain", 1000), "000"),
    (purchase("tip", 1000, tip_amount=200), "000"),
    (purchase("cashout", 1000, cash_amount=2000), "000"),
    (purchase("surcharge", 1000, surcharge_amount=150), "000"),
    (m.RefundRequest(pos_ref_id="refund", refund_amount=700), "000"),
    (m.CashoutRequest(pos_ref_id="cash-only", cash_amount=2000), "000"),
    (m.MotoPurchaseRequest(pos_ref_id="moto", purchase_amount=1500), "000"),
    (m.SettleRequest(), "941"),
    (m.SettlementEnquiryRequest(), "000"),
    (m.AccountVerifyRequest(pos_ref_id="verify"), "000"),
    (m.ZipPurchaseRequest(pos_ref_id="zip", purchase_amount=1000, store_code="S1"), "000"),
    (
        m.ZipRefundRequest(pos_ref_id="zip-refund", refund_amount=400, original_receipt_number="1"),
        "000",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code"),
    SIMPLE_TRANSACTIONS,
    ids=[f"{r.tx_type}-{r.pos_ref_id}".rstrip("-") for r, _ in SIMPLE_TRANSACTIONS],
)
async def test_each_transaction_type_is_approved_once(
    pos: DirectPos, control: Control, request_: m.TransactionRequest, code: str
) -> None:
    done = await pos.transact(request_, TIMEOUT)
    assert (request_.tx_type, Outcome.SUCCESS, False, code) == (
        done.tx_type,
        done.outcome,
        done.recovered,
        host_code(done),
    )
    assert 1 == await requests_for(control, request_.pos_ref_id)
    assert SpiStatus.PAIRED_CONNECTED == pos.session.status


async def test_purchase_amounts_come_back_in_the_response(pos: DirectPos) -> None:
    done = await pos.transact(
        purchase("amounts", 1000, tip_amount=200, surcharge_amount=150), TIMEOUT
    )
    assert isinstance(done.response, m.TransactionResponse)
    assert (1000, 200, 150, 1350) == (
        done.response.purchase_amount,
        done.response.tip_amount,
        done.response.surcharge_amount,
        done.response.bank_noncash_amount,
    )


async def test_a_reversal_reverses_the_last_purchase(pos: DirectPos) -> None:
    assert Outcome.SUCCESS == (await pos.transact(purchase("to-reverse", 1000), TIMEOUT)).outcome
    done = await pos.transact(m.ReversalRequest(pos_ref_id="to-reverse"), TIMEOUT)
    assert (m.TxType.REVERSAL, Outcome.SUCCESS) == (done.tx_type, done.outcome)


async def test_the_preauth_family_runs_against_one_opened_preauth(pos: DirectPos) -> None:
    opened = await pos.transact(
        m.PreauthOpenRequest(pos_ref_id="pa-1", preauth_amount=10000), TIMEOUT
    )
    assert isinstance(opened.response, m.TransactionResponse)
    preauth_id = opened.response.preauth_id
    assert preauth_id
    steps: list[tuple[m.TransactionRequest, int | None]] = [
        (m.PreauthTopupRequest(pos_ref_id="pa-2", preauth_id=preauth_id, topup_amount=2000), 12000),
        (
            m.PreauthPartialCancellationRequest(
                pos_ref_id="pa-3", preauth_id=preauth_id, preauth_cancel_amount=500
            ),
            11500,
        ),
        (m.PreauthExtendRequest(pos_ref_id="pa-4", preauth_id=preauth_id), 11500),
        (
            m.PreauthCompletionRequest(
                pos_ref_id="pa-5", preauth_id=preauth_id, completion_amount=11500
            ),
            None,
        ),
    ]
    for request, balance in steps:
        done = await pos.transact(request, TIMEOUT)
        assert isinstance(done.response, m.TransactionResponse)
        assert (request.tx_type, Outcome.SUCCESS, balance) == (
            done.tx_type,
            done.outcome,
            done.response.balance_amount,
        )
    again = await pos.transact(
        m.PreauthExtendRequest(pos_ref_id="pa-6", preauth_id=preauth_id), TIMEOUT
    )
    assert (Outcome.FAILED, "PRE_AUTH_ID_ALREADY_COMPLETED") == (
        again.outcome,
        again.response.error_reason if isinstance(again.response, m.TransactionResponse) else None,
    )


async def test_a_preauth_can_be_cancelled(pos: DirectPos) -> None:
    opened = await pos.transact(
        m.PreauthOpenRequest(pos_ref_id="pc-1", preauth_amount=5000), TIMEOUT
    )
    assert isinstance(opened.response, m.TransactionResponse)
    assert opened.response.preauth_id
    done = await pos.transact(
        m.PreauthCancellationRequest(pos_ref_id="pc-2", preauth_id=opened.response.preauth_id),
        TIMEOUT,
    )
    assert isinstance(done.response, m.TransactionResponse)
    assert (m.TxType.PREAUTH_CANCELLATION, Outcome.SUCCESS, 5000) == (
        done.tx_type,
        done.outcome,
        done.response.preauth_amount,
    )


async def test_lookups_status_configuration_and_print_get_their_answers(pos: DirectPos) -> None:
    await pos.transact(purchase("looked-up", 1000), TIMEOUT)
    session = pos.session

    found = await pos.request(lambda now: session.lookup_transaction("looked-up", now), TIMEOUT)
    assert isinstance(found, TransactionLookupResult)
    assert found.response.tx is not None
    assert (True, "looked-up", True) == (
        found.response.success,
        found.response.tx.pos_ref_id,
        found.response.tx.success,
    )
    missing = await pos.request(lambda now: session.lookup_transaction("never", now), TIMEOUT)
    assert isinstance(missing, TransactionLookupResult)
    assert (False, "POS_REF_ID_NOT_FOUND") == (
        missing.response.success,
        missing.response.error_reason,
    )

    last = await pos.request(session.lookup_last_transaction, TIMEOUT)
    assert isinstance(last, LastTransactionResult)
    assert ("looked-up", True) == (last.response.pos_ref_id, last.response.success)

    status = await pos.request(session.get_terminal_status, TIMEOUT)
    assert isinstance(status, TerminalAnswer)
    assert isinstance(status.answer, m.TerminalStatus)
    assert (True, "IDLE", 100) == (
        status.answer.success,
        status.answer.status,
        status.answer.battery_level,
    )

    config = await pos.request(session.get_terminal_configuration, TIMEOUT)
    assert isinstance(config, TerminalAnswer)
    assert isinstance(config.answer, m.TerminalConfiguration)
    assert (SERIAL, "SIM-T1") == (config.answer.serial_number, config.answer.terminal_model)
    assert SERIAL == session.terminal_serial_number

    printed = await pos.request(lambda now: session.print_receipt("k1", "HELLO", now), TIMEOUT)
    assert isinstance(printed, TerminalAnswer)
    assert isinstance(printed.answer, m.PrintResponse)
    assert True is printed.answer.success


# ---------------------------------------------------------------- the cents table


async def test_cents_51_is_declined(pos: DirectPos) -> None:
    done = await pos.transact(purchase("r51", 1051), TIMEOUT)
    assert (Outcome.FAILED, "DECLINED", "51") == (done.outcome, done.message, host_code(done))


@pytest.mark.parametrize(
    ("accept", "outcome", "code"), [(True, Outcome.SUCCESS, "000"), (False, Outcome.FAILED, "512")]
)
async def test_cents_52_asks_for_a_signature_and_the_answer_decides(
    pos: DirectPos, accept: bool, outcome: Outcome, code: str
) -> None:
    pos.on_signature = lambda event: accept
    done = await pos.transact(purchase("r52", 1052), TIMEOUT)
    (required,) = [e for e in pos.events if isinstance(e, SignatureRequired)]
    assert ("r52", False) == (required.pos_ref_id, required.placeholder)
    assert (outcome, code) == (done.outcome, host_code(done))


async def test_cents_53_asks_for_a_phone_auth_code_and_approves_with_it(pos: DirectPos) -> None:
    done = await pos.transact(purchase("r53", 1053), TIMEOUT)
    assert isinstance(done.response, m.TransactionResponse)
    assert (Outcome.SUCCESS, "AB1234") == (done.outcome, done.response.auth_code)


async def test_cents_54_shows_progress_then_approves(pos: DirectPos) -> None:
    done = await pos.transact(purchase("r54", 1054), TIMEOUT)
    texts = [
        e.display_message_text
        for e in pos.events
        if isinstance(e, TransactionUpdate) and e.pos_ref_id == "r54"
    ]
    assert (Outcome.SUCCESS, SLOW_CARD_TEXTS) == (done.outcome, texts)


async def test_cents_55_never_answers_until_the_pos_cancels(pos: DirectPos) -> None:
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(pos.transact(purchase("r55", 1055), TIMEOUT))
        await pos.wait_for(TransactionRequestSent, lambda e: e.pos_ref_id == "r55", TIMEOUT)
        # A round trip behind the request: the terminal has it and is busy with it.
        status = await pos.request(pos.session.get_terminal_status, TIMEOUT)
        assert isinstance(status, TerminalAnswer)
        assert isinstance(status.answer, m.TerminalStatus)
        assert ("BUSY", False) == (status.answer.status, running.done())
        await pos.act(pos.session.cancel_transaction)
    done = running.result()
    assert (Outcome.FAILED, "511") == (done.outcome, host_code(done))
    assert [] == [e for e in pos.events if isinstance(e, CancelFailed)]


async def test_cents_56_is_partially_approved_for_half(pos: DirectPos) -> None:
    done = await pos.transact(purchase("r56", 1056), TIMEOUT)
    assert isinstance(done.response, m.TransactionResponse)
    assert (Outcome.SUCCESS, "002", 528) == (
        done.outcome,
        done.response.host_response_code,
        done.response.purchase_amount,
    )


async def test_cents_57_refuses_a_cancel_past_the_point_of_no_return(pos: DirectPos) -> None:
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(pos.transact(purchase("r57", 1057), TIMEOUT))
        await pos.wait_for(
            TransactionUpdate,
            lambda e: (e.pos_ref_id, e.display_message_text) == ("r57", "PROCESSING"),
            TIMEOUT,
        )
        await pos.act(pos.session.cancel_transaction)
        refused = await pos.wait_for(CancelFailed, timeout=TIMEOUT)
    assert ("r57", "TXN_PAST_POINT_OF_NO_RETURN") == (refused.pos_ref_id, refused.error_reason)
    assert (Outcome.SUCCESS, "000") == (running.result().outcome, host_code(running.result()))


@pytest.mark.parametrize(
    "amount", [1058, 1059], ids=["58-drop-before-send", "59-drop-after-request"]
)
async def test_cents_58_and_59_drop_the_link_and_the_pos_recovers_the_approval(
    pos: DirectPos, control: Control, amount: int
) -> None:
    ref = f"r{amount % 100}"
    done = await pos.transact(purchase(ref, amount), TIMEOUT)
    assert (Outcome.SUCCESS, True, ref) == (done.outcome, done.recovered, done.pos_ref_id)
    assert 1 == await requests_for(control, ref, "purchase")
    assert any(
        isinstance(e, StatusChanged) and e.status is SpiStatus.PAIRED_CONNECTING for e in pos.events
    )


# ---------------------------------------------------------------- drops at each named step


@pytest.mark.parametrize(
    "step", ["after_request_received", "after_result_before_send", "while_awaiting_signature"]
)
async def test_a_drop_at_each_step_of_a_purchase_recovers_the_true_outcome_without_resending(
    pos: DirectPos, control: Control, step: str
) -> None:
    await control.post(SERIAL, "drop", {"at": step})
    done = await pos.transact(purchase(f"drop-{step}", 1000), TIMEOUT)
    assert (Outcome.SUCCESS, True, "000") == (done.outcome, done.recovered, host_code(done))
    assert 1 == await requests_for(control, f"drop-{step}", "purchase")
    assert None is (await control.get(SERIAL))["settings"]["drop_at"]


async def test_a_drop_now_mid_transaction_recovers_the_true_outcome_without_resending(
    pos: DirectPos, control: Control
) -> None:
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(pos.transact(purchase("drop-now", 1054), TIMEOUT))
        await pos.wait_for(TransactionUpdate, lambda e: e.pos_ref_id == "drop-now", TIMEOUT)
        assert True is (await control.post(SERIAL, "drop", {"at": "now"}))["dropped"]
    done = running.result()
    assert (Outcome.SUCCESS, True) == (done.outcome, done.recovered)
    assert 1 == await requests_for(control, "drop-now", "purchase")


async def test_a_restarted_pos_recovers_a_purchase_that_finished_while_it_was_down(
    sim: Simulator, control: Control
) -> None:
    await control.post(SERIAL, "drop", {"at": "after_request_received"})
    async with DirectPos(url_of(sim), secrets=KEYS, reconnect=False) as first:
        await first.wait_ready(TIMEOUT)
        with pytest.raises(RetryLater):
            await first.transact(purchase("restart", 1000), TIMEOUT)  # the link died with it
        stored = first.secrets
    assert stored is not None
    async with DirectPos(url_of(sim), secrets=stored) as second:
        done = await second.recover("restart", m.TxType.PURCHASE, TIMEOUT)
    assert (Outcome.SUCCESS, True, "restart") == (done.outcome, done.recovered, done.pos_ref_id)
    assert 1 == await requests_for(control, "restart", "purchase")
    last = (await control.get(SERIAL))["last_tx"]
    assert ("restart", True, False) == (last["pos_ref_id"], last["success"], last["sent"])


# ---------------------------------------------------------------- keys


async def test_a_key_rollover_mid_session_moves_both_sides_and_transactions_go_on(
    sim: Simulator, pos: DirectPos, control: Control
) -> None:
    assert Outcome.SUCCESS == (await pos.transact(purchase("before-roll", 1000), TIMEOUT)).outcome
    async with asyncio.TaskGroup() as tasks:
        # The roll lands while a slow card is running.
        running = tasks.create_task(pos.transact(purchase("during-roll", 1054), TIMEOUT))
        await pos.wait_for(TransactionUpdate, lambda e: e.pos_ref_id == "during-roll", TIMEOUT)
        await control.post(SERIAL, "key-rollover", {"switch": True})
        rolled = await pos.wait_for(SecretsChanged, lambda e: e.reason == "rolled", TIMEOUT)
    assert Outcome.SUCCESS == running.result().outcome
    after = await pos.transact(purchase("after-roll", 1000), TIMEOUT)
    assert Outcome.SUCCESS == after.outcome
    assert rolled.secrets is not None
    assert pos.secrets is not None
    terminal_keys = sim.terminals[0].session.state.secrets
    assert terminal_keys is not None
    assert (True, True, True) == (
        rolled.secrets.same_as(KEYS.rolled()),
        pos.secrets.same_as(rolled.secrets),
        terminal_keys.same_as(rolled.secrets),
    )
    state = await control.get(SERIAL)
    assert (False, 0) == (state["key_rollover_pending"], state["counters"]["frames_rejected"])
    assert [] == [e for e in pos.events if isinstance(e, FrameRejected)]


# ---------------------------------------------------------------- link health


async def test_a_silent_terminal_is_dropped_after_two_missed_pongs_and_reconnected(
    sim: Simulator, control: Control
) -> None:
    quick = Timings(ping_interval_s=0.5, pong_timeout_s=0.3)
    async with DirectPos(url_of(sim), secrets=KEYS, timings=quick) as pos:
        await pos.wait_ready(TIMEOUT)
        await control.post(SERIAL, "options", {"answer_pings": False})
        closed = await pos.wait_for(CloseConnection, timeout=TIMEOUT)
        await pos.wait_for(
            StatusChanged, lambda e: e.status is SpiStatus.PAIRED_CONNECTING, TIMEOUT
        )
        await control.post(SERIAL, "options", {"answer_pings": True})
        await pos.wait_ready(TIMEOUT)
        done = await pos.transact(purchase("after-silence", 1000), TIMEOUT)
    assert ("missed pongs", Outcome.SUCCESS) == (closed.reason, done.outcome)
    assert 2 <= (await control.get(SERIAL))["counters"]["connections_total"]
