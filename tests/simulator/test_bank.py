"""The simulated bank: which amount the outcome rules read, and that it answers as a responder."""

from __future__ import annotations

import pytest

from multipair.simulator.bank import Bank, main_amount
from multipair.spi import messages as m
from multipair.spi.terminal import (
    Outcome,
    ReceivedTransaction,
    Responder,
    TerminalOptions,
    TerminalProfile,
    TerminalState,
)

T0 = 1623128612.123


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (m.PurchaseRequest(pos_ref_id="p", purchase_amount=1051, tip_amount=7), 1051),
        (m.RefundRequest(pos_ref_id="p", refund_amount=52), 52),
        (m.CashoutRequest(pos_ref_id="p", cash_amount=53, surcharge_amount=None), 53),
        (m.MotoPurchaseRequest(pos_ref_id="p", purchase_amount=54), 54),
        (m.PreauthOpenRequest(pos_ref_id="p", preauth_amount=55), 55),
        (m.PreauthTopupRequest(pos_ref_id="p", preauth_id="1", topup_amount=56), 56),
        (
            m.PreauthPartialCancellationRequest(
                pos_ref_id="p", preauth_id="1", preauth_cancel_amount=57
            ),
            57,
        ),
        (m.PreauthCompletionRequest(pos_ref_id="p", preauth_id="1", completion_amount=58), 58),
        (m.ZipPurchaseRequest(pos_ref_id="p", purchase_amount=59, store_code="S"), 59),
        (m.ZipRefundRequest(pos_ref_id="p", refund_amount=60, original_receipt_number="1"), 60),
        (m.SettleRequest(), 0),
        (m.ReversalRequest(pos_ref_id="p"), 0),
        (m.AccountVerifyRequest(pos_ref_id="p"), 0),
        (m.PreauthExtendRequest(pos_ref_id="p", preauth_id="1"), 0),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, m.Request) else str(v),
)
def test_main_amount_is_the_one_the_outcome_rules_read(
    request_: m.TransactionRequest, expected: int
) -> None:
    assert expected == main_amount(request_)


def test_bank_answers_a_cashout_with_a_null_surcharge_as_none() -> None:
    state = TerminalState(serial_number="SIM-0001")
    bank: Responder = Bank(state, TerminalProfile.for_serial("SIM-0001"), TerminalOptions())
    request = m.CashoutRequest(pos_ref_id="c1", cash_amount=2000, surcharge_amount=None)
    tx = ReceivedTransaction(request=request, message_id="cshout1", received_at=T0)
    data = bank.response_data(tx, Outcome.approve(), T0)
    assert (True, "c1", "CASH", 2000, 0, 0) == (
        data["success"],
        data["pos_ref_id"],
        data["transaction_type"],
        data["cash_amount"],
        data["surcharge_amount"],
        data["bank_noncash_amount"],
    )
    assert (1, 2000) == (state.batch.cash_count, state.batch.cash_value)
