"""``multipair tx ...`` against a real lane process and the simulator as its terminal.

The simulator decides by the cents of the amount (multipair.simulator.rules):
.51 declined, .52 signature, .53 phone authorisation, .55 never answers.
All tests share one paired lane (tests/cli/conftest.py) and leave it idle.
"""

from __future__ import annotations

import asyncio
import os
import pty

import aiohttp
import pytest

from multipair import broker_schema as bs
from tests.cli.conftest import SERIAL, SharedLane
from tests.cli.helpers import Cli, Running
from tests.simulator.helpers import Control
from tests.worker.helpers import LaneRig

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def cli(shared: SharedLane) -> Cli:
    return shared.cli


@pytest.fixture
def lane(shared: SharedLane) -> LaneRig:
    return shared.rig


RECEIPTS = ("customer_receipt", "merchant_receipt")


async def _end(lane: LaneRig, ref: str) -> None:
    """Cancel a transaction the terminal never finishes and wait for its end (lane idle again)."""
    await lane.send({"type": "cancel", "pos_ref_id": ref})
    await lane.events.wait_for(
        lambda b: b["type"] == "transaction_completed" and b.get("pos_ref_id") == ref
    )


async def _purchase(lane: LaneRig, ref: str, cents: int) -> None:
    """An approved purchase sent straight to the lane (to set a scene, not to test the CLI)."""
    command_id = await lane.send({"type": "purchase", "pos_ref_id": ref, "amount_cents": cents})
    assert "success" == (await lane.answer(command_id))["result"]


async def test_an_approved_purchase_exits_0_with_the_outcome_as_json(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    result = await cli.run("tx", "purchase", iid, "--amount", "12.50", "--pos-ref-id", "order-1")
    assert 0 == result.code, result
    doc = result.json()
    assert ("transaction_completed", "success", True, "purchase", "order-1", 1250, iid) == (
        doc["type"],
        doc["result"],
        doc["approved"],
        doc["tx_type"],
        doc["pos_ref_id"],
        doc["amount_cents"],
        doc["instance_id"],
    )
    assert ("000", False, False) == (doc["host_response_code"], doc["recovered"], doc["repeated"])
    assert doc["rrn"]
    assert doc["auth_code"]
    assert doc["command_id"]
    assert [] == [name for name in RECEIPTS if name in doc]  # only with --receipt
    assert "order-1" in result.err  # progress goes to stderr under --json


async def test_a_declined_purchase_exits_1(cli: Cli, lane: LaneRig) -> None:
    result = await cli.run("tx", "purchase", lane.instance_id, "--amount", "10.51")
    assert 1 == result.code, result
    doc = result.json()
    assert ("failed", False, "51") == (doc["result"], doc["approved"], doc["host_response_code"])


async def test_a_purchase_for_people_shows_progress_and_the_key_facts(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    result = await cli.run(
        "tx",
        "purchase",
        iid,
        "--amount",
        "10.10",
        "--tip",
        "0.1",
        "--surcharge",
        "0.05",
        "--pos-ref-id",
        "order-2",
        "--receipt",
        json=False,
    )
    assert 0 == result.code, result
    lines = result.out.splitlines()
    assert (
        f"purchase $10.10 (tip $0.10, surcharge $0.05) on lane {iid}, pos_ref_id order-2"
        == lines[0]
    )
    assert "APPROVED  purchase $10.10  pos_ref_id order-2" in lines
    record = await lane.txs.get(iid, "order-2")
    assert record is not None
    outcome = record.outcome_event()
    assert isinstance(outcome, bs.TransactionCompleted)
    for fact in (
        "  also           tip $0.10, surcharge $0.05",
        "  host response  000 APPROVED",
        f"  RRN            {outcome.rrn}",
        f"  auth code      {outcome.auth_code}",
        "--- customer receipt ---",
        "--- merchant receipt ---",
    ):
        assert fact in lines, fact
    assert "" == result.err


async def test_refund_cashout_and_moto_exit_0_with_their_amounts(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    cases = (
        ("refund", "7", "amount_cents", 700),
        ("cashout", "20.00", "cashout_cents", 2000),
        ("moto", "15.5", "amount_cents", 1550),
    )
    # Sent at once: the lane runs them one at a time, each command waits for its own outcome.
    results = await asyncio.gather(
        *(
            cli.run("tx", action, iid, "--amount", amount, "--receipt")
            for action, amount, *_ in cases
        )
    )
    for (action, _, field, cents), result in zip(cases, results, strict=True):
        assert 0 == result.code, result
        doc = result.json()
        assert ("success", cents) == (doc["result"], doc[field]), doc
        assert all(doc[name] for name in RECEIPTS)
        assert {"refund": "refund", "cashout": "cashout", "moto": "moto_purchase"}[action] == (
            doc["tx_type"]
        )


async def test_a_reused_pos_ref_id_is_rejected_by_the_lane_with_exit_2(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    await _purchase(lane, "r1", 100)
    again = await cli.run("tx", "refund", iid, "--amount", "1", "--pos-ref-id", "r1")
    assert 2 == again.code, again
    assert "" == again.out
    assert "duplicate_pos_ref_id" in again.error_lines()[-1]


async def test_tx_status_looks_a_transaction_up_on_the_terminal(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    await _purchase(lane, "s1", 300)
    found, missing = await asyncio.gather(
        cli.run("tx", "status", iid, "--pos-ref-id", "s1"),
        cli.run("tx", "status", iid, "--pos-ref-id", "never-sent", json=False),
    )
    assert (0, 1) == (found.code, missing.code), (found, missing)
    doc = found.json()
    assert ("transaction_lookup", True, "success", 300, True) == (
        doc["type"],
        doc["found"],
        doc["result"],
        doc["amount_cents"],
        doc["approved"],
    )
    assert "NOT FOUND  the terminal has no transaction never-sent\n" == missing.out
    assert False is doc["in_progress"]


@pytest.mark.parametrize(
    ("reason", "heading"),
    [
        ("TRANSACTION_IN_PROGRESS", "IN PROGRESS"),
        ("TRANSACTION_IN_PROGRESS_AWAITING_SIGNATURE", "IN PROGRESS"),
        ("OPERATION_IN_PROGRESS", "IN PROGRESS"),
        ("INTERNAL_ERROR", "UNKNOWN"),
    ],
)
async def test_tx_status_exits_3_when_the_terminal_cannot_say_yet(
    shared: SharedLane, reason: str, heading: str
) -> None:
    """Only POS_REF_ID_NOT_FOUND is "not found" (1); a lookup the terminal answers with an
    in-progress reason (or any other failure) leaves the outcome unknown (3)."""
    iid = shared.iid
    async with aiohttp.ClientSession() as http:
        control = Control(http, shared.sim.control_url)
        await control.post(SERIAL, "options", {"get_transaction_error": reason})
        try:
            machine, human = await asyncio.gather(
                shared.cli.run("tx", "status", iid, "--pos-ref-id", "busy-1"),
                shared.cli.run("tx", "status", iid, "--pos-ref-id", "busy-1", json=False),
            )
        finally:
            await control.post(SERIAL, "options", {"get_transaction_error": None})
    assert (3, 3) == (machine.code, human.code), (machine, human)
    doc = machine.json()
    assert (False, "unknown", reason, False, heading == "IN PROGRESS") == (
        doc["found"],
        doc["result"],
        doc["error_reason"],
        doc["approved"],
        doc["in_progress"],
    )
    (line,) = human.out.splitlines()
    assert line.startswith(f"{heading}  "), line
    assert reason in line, line
    assert "never re-send" in line, line
    assert "NOT FOUND" not in human.out


async def test_tx_status_on_a_busy_lane_answers_at_once_from_the_lanes_record(
    cli: Cli, lane: LaneRig
) -> None:
    """Issue 14: a lookup behind a running transaction waited 60 s, then said "look it up";
    the record answers now (IN PROGRESS for the running one, its outcome for a finished one)."""
    iid = lane.instance_id
    await _purchase(lane, "rec-done", 400)
    await lane.send({"type": "purchase", "pos_ref_id": "rec-busy", "amount_cents": 1055})
    await lane.wait_state(flow="transaction")
    try:
        started = asyncio.get_running_loop().time()
        busy, busy_human, done, unknown = await asyncio.gather(
            cli.run("tx", "status", iid, "--pos-ref-id", "rec-busy"),
            cli.run("tx", "status", iid, "--pos-ref-id", "rec-busy", json=False),
            cli.run("tx", "status", iid, "--pos-ref-id", "rec-done", json=False),
            cli.run("tx", "status", iid, "--pos-ref-id", "rec-never"),
        )
        took = asyncio.get_running_loop().time() - started
    finally:
        await _end(lane, "rec-busy")
    assert (3, 3, 0, 3) == (busy.code, busy_human.code, done.code, unknown.code)
    assert took < 10, took  # the CLI's start-up, not the lookup's 60 s
    doc = busy.json()
    assert (False, "unknown", True, "record", "transaction") == (
        doc["found"],
        doc["result"],
        doc["in_progress"],
        doc["source"],
        doc["lane_flow"],
    )
    (line,) = busy_human.out.splitlines()
    assert line.startswith("IN PROGRESS  rec-busy is recorded and not finished"), line
    assert "never re-send" in line
    assert done.out.startswith("APPROVED  purchase $4.00  pos_ref_id rec-done"), done.out
    assert "(from the lane's record: the lane is busy (transaction)" in done.out
    assert (False, False) == (unknown.json()["found"], unknown.json()["in_progress"])


async def test_settle_and_enquiry_report_the_settlement(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    settle, enquiry = await asyncio.gather(
        cli.run("tx", "settle", iid), cli.run("tx", "enquiry", iid, json=False)
    )
    assert (0, 0) == (settle.code, enquiry.code), (settle, enquiry)
    doc = settle.json()
    assert ("settlement", "success", False) == (doc["type"], doc["result"], doc["enquiry"])
    assert "merchant_receipt" not in doc
    assert f"TOTALS  lane {iid}" in enquiry.out.splitlines()


async def test_signature_steps_are_answered_from_a_second_command(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    for answer, code, result in (("--accept", 0, "APPROVED"), ("--decline", 1, "DECLINED")):
        ref = f"sig{answer}"
        purchase = await cli.start(
            "tx", "purchase", iid, "--amount", "10.52", "--pos-ref-id", ref, json=False
        )
        try:
            line = await purchase.until(lambda text: text.startswith("Signature required"))
            assert (
                f"Signature required — run `multipair tx signature {iid} --accept|--decline`"
                == line
            )
            signed = await cli.run("tx", "signature", iid, answer)
            assert 0 == signed.code, signed
            assert (True, "command_accepted") == (signed.json()["accepted"], signed.json()["type"])
            done = await purchase.finish()
        finally:
            await purchase.kill()
            await _end(lane, ref)
        assert code == done.code, done
        assert any(text.startswith(f"{result}  purchase $10.52") for text in done.out.splitlines())


async def _on_a_terminal(cli: Cli, *args: str) -> tuple[Running, int]:
    """The command with a pseudo-terminal as stdin (a person at the keyboard); stdout piped."""
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *cli.argv(args, json=False),
        stdin=slave,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli.env,
    )
    os.close(slave)
    return Running(proc), master


async def test_on_a_terminal_the_signature_is_asked_for_with_the_receipt_shown(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    purchase, keyboard = await _on_a_terminal(
        cli, "tx", "purchase", iid, "--amount", "10.52", "--pos-ref-id", "sig-tty"
    )
    try:
        await purchase.until(lambda text: text.startswith("Signature required. The receipt"))
        os.write(keyboard, b"d\n")  # typed ahead: read once the question is asked
        done = await purchase.finish()
    finally:
        os.close(keyboard)
        await purchase.kill()
        await _end(lane, "sig-tty")
    assert 1 == done.code, done
    assert "Does the signature match? [a]ccept / [d]ecline: " in done.out
    assert "RECEIPT" in done.out.upper(), done.out  # the merchant copy to sign, shown
    assert any(text.startswith("DECLINED  purchase $10.52") for text in done.out.splitlines())
    assert "Signature declined; waiting for the outcome…" in done.out


async def test_on_a_terminal_the_phone_authorisation_code_is_asked_for(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    purchase, keyboard = await _on_a_terminal(
        cli, "tx", "purchase", iid, "--amount", "10.53", "--pos-ref-id", "auth-tty"
    )
    try:
        await purchase.until(lambda text: text.startswith("Authorisation code required"))
        os.write(keyboard, b"12\n")  # too short: said so, and asked again
        await purchase.until(lambda text: "Authorisation code (6 letters or digits)" in text)
        os.write(keyboard, b"A1B2C3\n")
        done = await purchase.finish()
    finally:
        os.close(keyboard)
        await purchase.kill()
        await _end(lane, "auth-tty")
    assert 0 == done.code, done
    assert "  auth code      A1B2C3" in done.out.splitlines()


async def test_a_partial_approval_and_a_cancel_say_so(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    partial = await cli.run("tx", "purchase", iid, "--amount", "6.56", json=False)
    assert 0 == partial.code, partial
    assert "APPROVED (PARTIAL)  purchase $3.28" in partial.out, partial.out
    assert "$3.28 of $6.56 still to pay another way" in partial.out, partial.out
    machine = await cli.run("tx", "purchase", iid, "--amount", "6.56")
    assert (True, True) == (machine.json()["approved"], machine.json()["partial"])

    purchase = await cli.start(
        "tx", "purchase", iid, "--amount", "10.55", "--pos-ref-id", "cx-1", json=False
    )
    try:
        await lane.wait_state(flow="transaction")
        assert 0 == (await cli.run("tx", "cancel", iid, "--pos-ref-id", "cx-1")).code
        done = await purchase.finish()
    finally:
        await purchase.kill()
        await _end(lane, "cx-1")
    assert 1 == done.code, done
    assert any(text.startswith("CANCELLED  purchase") for text in done.out.splitlines()), done


async def test_a_phone_authorisation_code_is_given_with_auth_code(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    purchase = await cli.start(
        "tx", "purchase", iid, "--amount", "10.53", "--pos-ref-id", "auth-1", json=False
    )
    try:
        line = await purchase.until(lambda text: text.startswith("Authorisation code required"))
        assert line.endswith(f"then run `multipair tx auth-code {iid} CODE`")
        bad = await cli.run("tx", "auth-code", iid, "12")
        assert 2 == bad.code, bad
        given = await cli.run("tx", "auth-code", iid, "A1B2C3")
        assert 0 == given.code, given
        done = await purchase.finish()
    finally:
        await purchase.kill()
        await _end(lane, "auth-1")
    assert 0 == done.code, done
    assert "  auth code      A1B2C3" in done.out.splitlines()


async def test_cancel_ends_a_purchase_the_customer_never_finishes(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    nothing = await cli.run("tx", "cancel", iid)
    assert 2 == nothing.code, nothing
    assert "the lane cannot do that now" in nothing.err

    purchase = await cli.start("tx", "purchase", iid, "--amount", "10.55", "--pos-ref-id", "c1")
    try:
        await lane.wait_state(flow="transaction")
        cancelled = await cli.run("tx", "cancel", iid, "--pos-ref-id", "c1")
        assert 0 == cancelled.code, cancelled
        assert True is cancelled.json()["accepted"]
        done = await purchase.finish()
    finally:
        await purchase.kill()
        await _end(lane, "c1")
    assert 1 == done.code, done
    assert ("failed", "511") == (done.json()["result"], done.json()["host_response_code"])


async def test_no_outcome_in_time_exits_3_and_says_how_to_look_it_up(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    try:
        result = await cli.run(
            "tx", "purchase", iid, "--amount", "10.55", "--pos-ref-id", "slow-1", "--timeout", "1"
        )
    finally:
        await _end(lane, "slow-1")  # the lane still runs it: end it, the next test needs it idle
    assert 3 == result.code, result
    assert {
        "instance_id": iid,
        "command_id": result.json()["command_id"],
        "pos_ref_id": "slow-1",
        "tx_type": "purchase",
        "result": "unknown",
        "approved": False,
        "timed_out": True,
    } == result.json()
    assert (
        f"multipair: error: no outcome within 1s; the transaction may still complete: check it "
        f"with `multipair tx status {iid} --pos-ref-id slow-1`"
    ) == result.error_lines()[-1]


async def test_a_purchase_that_could_not_start_in_time_is_never_run_late(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    await lane.send({"type": "purchase", "pos_ref_id": "ahead", "amount_cents": 1055})
    try:
        await lane.wait_state(flow="transaction")
        queued = await cli.run("tx", "purchase", iid, "--amount", "1", "--timeout", "1")
    finally:
        await _end(lane, "ahead")
    assert 3 == queued.code, queued
    rejected = await lane.answer(queued.json()["command_id"])
    assert ("command_rejected", "expired") == (rejected["type"], rejected["reason"])
    assert await lane.txs.get(iid, queued.json()["pos_ref_id"]) is None  # no record: never sent


async def test_ctrl_c_while_waiting_exits_3_and_says_how_to_look_it_up(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    purchase = await cli.start("tx", "purchase", iid, "--amount", "10.55", "--pos-ref-id", "int-1")
    try:
        await lane.wait_state(flow="transaction")
        await purchase.interrupt()
        done = await purchase.finish()
    finally:
        await purchase.kill()
        await _end(lane, "int-1")
    assert 3 == done.code, done
    assert (
        "multipair: error: interrupted; the purchase may still complete: check it with "
        f"`multipair tx status {iid} --pos-ref-id int-1`"
    ) == done.error_lines()[-1]


async def test_a_stopped_lane_refuses_transactions_with_exit_2(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    await lane.profiles.update(iid, enabled=False)  # what `lane stop` does (tested on its own)
    try:
        result = await cli.run("tx", "purchase", iid, "--amount", "1")
    finally:
        await lane.profiles.update(iid, enabled=True)
    assert 2 == result.code, result
    assert "" == result.out
    assert [
        f"multipair: error: lane stopped: {iid} is stopped; start it with "
        f"`multipair lane start {iid}`"
    ] == result.error_lines()
    assert [] == await lane.txs.in_flight(iid)  # nothing was sent


async def test_pairing_a_paired_lane_exits_2(cli: Cli, lane: LaneRig) -> None:
    result = await cli.run("lane", "pair", lane.instance_id, "--confirm")
    assert 2 == result.code, result
    assert f"multipair: error: lane {lane.instance_id} is already paired" in result.err
