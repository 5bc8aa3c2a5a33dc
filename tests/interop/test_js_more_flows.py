"""The published mx51 JavaScript client's other transactions against the simulator (issue 17).

Same harness (``js_harness.py``) as ``test_js_client.py`` (how the library is run
under Node, and why each shim is there, is told there). Here the library
drives what a POS reaches through ``spi.EnablePreauth()`` (account verify,
preauth open / top-up / partial cancellation / extend / completion /
cancellation) and through ``Spi.InitiateZipPurchaseTx`` /
``InitiateZipRefundTx``, and the tests check what the JS side reports
(outcome, ``PreauthResponse`` balances, the preauth id carried from the open
to the top-up to the completion, Zip data) against what the simulated
terminal and its bank recorded (PROTOCOL.md §7.16, §7.17), including a
preauth the simulator's control API opened "elsewhere" (``POST
/terminals/<serial>/preauths``) that the JS POS tops up and completes by id.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from multipair.simulator import Simulator
from tests.interop.js_harness import HarnessRun, finished_tx, run_harness
from tests.simulator.helpers import KEYS, Control

READY: dict[str, Any] = {"do": "wait_status", "status": "PairedConnected"}


def tx(kind: str, ref: str, **fields: Any) -> dict[str, Any]:
    """One ``tx`` step of the harness plan."""
    return {"do": "tx", "kind": kind, "ref": ref, **fields}


def approved(run: HarnessRun, ref: str, event: str) -> dict[str, Any]:
    """The JS side's view of the finished transaction ``ref``, checked approved by ``event``."""
    done = finished_tx(run, ref)
    assert ("Success", event, ref, True, "000") == (
        done["success"],
        done["response_event"],
        done["response"]["pos_ref_id"],
        done["response"]["success"],
        done["response"]["host_response_code"],
    ), run.explain(f"{ref} was not approved")
    response: dict[str, Any] = done["response"]
    return response


async def test_js_client_opens_tops_up_and_completes_a_preauth(
    node: str, paired_sim: Simulator
) -> None:
    terminal = paired_sim.terminals[0]
    plan: list[dict[str, Any]] = [
        READY,
        tx("account_verify", "verify-1"),
        tx("preauth_open", "open-1", cents=10000),
        tx("preauth_topup", "topup-1", cents=2500, preauth_of="open-1"),
        tx("preauth_partial_cancel", "pcancel-1", cents=500, preauth_of="open-1"),
        tx("preauth_extend", "extend-1", preauth_of="open-1"),
        tx("preauth_complete", "complete-1", cents=11000, surcharge_cents=150, preauth_of="open-1"),
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    verify = approved(run, "verify-1", "account_verify_response")
    assert "VERIFY" == verify["transaction_type"]
    assert verify["has_merchant_receipt"]
    assert "AccountVerify" == finished_tx(run, "verify-1")["tx_type"]

    opened = approved(run, "open-1", "preauth_response")
    preauth_id = opened["preauth_id"]
    assert preauth_id
    assert ("PRE-AUTH", 10000, 0) == (
        opened["transaction_type"],
        opened["balance_amount"],
        opened["previous_balance_amount"],
    )
    topped = approved(run, "topup-1", "preauth_topup_response")
    assert (preauth_id, "TOPUP", 12500, 10000) == (
        topped["preauth_id"],
        topped["transaction_type"],
        topped["balance_amount"],
        topped["previous_balance_amount"],
    )
    cancelled = approved(run, "pcancel-1", "preauth_partial_cancellation_response")
    assert (preauth_id, "CANCEL", 12000, 12500) == (
        cancelled["preauth_id"],
        cancelled["transaction_type"],
        cancelled["balance_amount"],
        cancelled["previous_balance_amount"],
    )
    extended = approved(run, "extend-1", "preauth_extend_response")
    assert (preauth_id, "PRE-AUTH EXT", 12000, 12000) == (
        extended["preauth_id"],
        extended["transaction_type"],
        extended["balance_amount"],
        extended["previous_balance_amount"],
    )
    completed = approved(run, "complete-1", "completion_response")
    # PCOMP: balance 0 after; "before" is the completion amount (the library's
    # own note: the response has no better field, §7.16).
    assert (preauth_id, "PCOMP", 0, 11000, 11000, 150) == (
        completed["preauth_id"],
        completed["transaction_type"],
        completed["balance_amount"],
        completed["previous_balance_amount"],
        completed["completion_amount"],
        completed["surcharge_amount"],
    )
    # Every one of them is a "Preauth" flow for the library (account verify aside).
    assert {"Preauth"} == {
        finished_tx(run, ref)["tx_type"]
        for ref in ("open-1", "topup-1", "pcancel-1", "extend-1", "complete-1")
    }

    # The terminal's bank: the preauth exists, closed by the completion, once each.
    balances = terminal.session.state.preauths
    assert [preauth_id] == list(balances)
    assert (0, False) == (balances[preauth_id].balance, balances[preauth_id].open)
    history = terminal.snapshot()["history"]
    assert [
        ("verify-1", True),
        ("open-1", True),
        ("topup-1", True),
        ("pcancel-1", True),
        ("extend-1", True),
        ("complete-1", True),
    ] == [(r["pos_ref_id"], r["success"]) for r in history]
    assert 0 == terminal.snapshot()["counters"]["frames_rejected"]


async def test_js_client_sees_a_completed_preauth_refused_and_a_declined_top_up(
    node: str, paired_sim: Simulator
) -> None:
    terminal = paired_sim.terminals[0]
    plan: list[dict[str, Any]] = [
        READY,
        tx("preauth_open", "open-2", cents=5000),
        tx("preauth_topup", "topup-declined", cents=1051, preauth_of="open-2"),
        tx("preauth_cancel", "cancel-2", preauth_of="open-2"),
        tx("preauth_complete", "complete-after-cancel", cents=4000, preauth_of="open-2"),
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    preauth_id = approved(run, "open-2", "preauth_response")["preauth_id"]
    declined = finished_tx(run, "topup-declined")
    assert ("Failed", "preauth_topup_response", "51") == (
        declined["success"],
        declined["response_event"],
        declined["response"]["host_response_code"],
    )
    cancelled = approved(run, "cancel-2", "preauth_cancellation_response")
    # The declined top-up left the balance alone: the cancellation releases 50.00.
    assert (preauth_id, "PRE-AUTH CANCEL", 0, 5000) == (
        cancelled["preauth_id"],
        cancelled["transaction_type"],
        cancelled["balance_amount"],
        cancelled["previous_balance_amount"],
    )
    refused = finished_tx(run, "complete-after-cancel")
    assert ("Failed", "completion_response", "PRE_AUTH_ID_ALREADY_COMPLETED") == (
        refused["success"],
        refused["response_event"],
        refused["response"]["error_reason"],
    ), run.explain("a completion of a cancelled preauth was not refused")
    assert preauth_id == refused["response"]["preauth_id"]
    found = terminal.session.state.preauths[preauth_id]
    assert (0, False) == (found.balance, found.open)


async def test_js_client_makes_a_zip_purchase_and_refunds_it(
    node: str, paired_sim: Simulator
) -> None:
    terminal = paired_sim.terminals[0]
    plan: list[dict[str, Any]] = [
        READY,
        tx("zip_purchase", "zip-buy", cents=8990, store_code="store-42", description="2 chairs"),
        tx("zip_refund", "zip-back", cents=8990, receipt_of="zip-buy"),
        tx("zip_purchase", "zip-declined", cents=2051, store_code="store-42"),
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    bought = approved(run, "zip-buy", "purchase_zip_response")
    assert ("TRANS APPROVED", 8990, True, True) == (
        bought["host_response_text"],
        bought["purchase_amount"],
        bought["has_customer_receipt"],
        bought["has_merchant_receipt"],
    )
    receipt = bought["zip_data"]["receipt_number"]
    assert {"store_code": "store-42", "receipt_number": receipt}.items() <= bought[
        "zip_data"
    ].items()
    assert bought["zip_data"]["location_id"]
    assert bought["bank_date"]
    assert bought["bank_time"]

    refunded = approved(run, "zip-back", "refund_zip_response")
    assert 8990 == refunded["refund_amount"]
    assert receipt == refunded["zip_data"]["original_receipt_number"]
    assert refunded["zip_data"]["receipt_number"] != receipt

    declined = finished_tx(run, "zip-declined")
    assert ("Failed", "purchase_zip_response", "51") == (
        declined["success"],
        declined["response_event"],
        declined["response"]["host_response_code"],
    )
    assert ["ZipPurchase", "ZipRefund", "ZipPurchase"] == [
        finished_tx(run, ref)["tx_type"] for ref in ("zip-buy", "zip-back", "zip-declined")
    ]
    snapshot = terminal.snapshot()
    assert [("zip-buy", True), ("zip-back", True), ("zip-declined", False)] == [
        (r["pos_ref_id"], r["success"]) for r in snapshot["history"]
    ]
    assert 0 == snapshot["counters"]["frames_rejected"]


async def test_js_client_completes_a_preauth_opened_elsewhere(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # The preauth was opened earlier (another POS, yesterday's shift): the
    # acquirer knows it, the POS only has its id.
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    opened = await control.post(terminal.serial, "preauths", {"amount_cents": 20000})
    preauth_id = opened["preauth_id"]
    assert {preauth_id: {"balance": 20000, "open": True}} == opened["preauths"]
    plan: list[dict[str, Any]] = [
        READY,
        tx("preauth_topup", "late-topup", cents=5000, preauth_id=preauth_id),
        tx("preauth_complete", "late-complete", cents=24000, preauth_id=preauth_id),
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    topped = approved(run, "late-topup", "preauth_topup_response")
    assert (preauth_id, 25000, 20000) == (
        topped["preauth_id"],
        topped["balance_amount"],
        topped["previous_balance_amount"],
    )
    completed = approved(run, "late-complete", "completion_response")
    assert (preauth_id, 0, 24000) == (
        completed["preauth_id"],
        completed["balance_amount"],
        completed["completion_amount"],
    )
    state = await control.get(terminal.serial)
    assert {preauth_id: {"balance": 0, "open": False}} == state["preauths"]
