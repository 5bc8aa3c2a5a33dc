"""``multipair tx preauth ...``, ``account-verify``, ``zip-*`` against a real lane and simulator.

The simulated bank keeps the preauthorisations it opened and decides by the
cents of the main amount (multipair.simulator.rules): .51 declined, .55
never answers. All tests share one paired lane (tests/cli/conftest.py) and
leave it idle.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.cli.conftest import SharedLane
from tests.cli.helpers import Cli, Result, run, script
from tests.worker.helpers import LaneRig

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def cli(shared: SharedLane) -> Cli:
    return shared.cli


@pytest.fixture
def lane(shared: SharedLane) -> LaneRig:
    return shared.rig


def _facts(result: Result) -> tuple[object, ...]:
    """Exit code, then the outcome's preauthorisation facts from ``--json``."""
    doc = result.json()
    return (
        result.code,
        doc["result"],
        doc["tx_type"],
        doc["transaction_type"],
        doc["amount_cents"],
        doc["balance_before_cents"],
        doc["balance_after_cents"],
    )


async def test_a_preauth_opened_topped_up_reduced_extended_and_completed_exits_0(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    opened = await cli.run("tx", "preauth", "open", iid, "--amount", "100", "--pos-ref-id", "pa-1")
    assert (0, "success", "preauth_open", "PRE-AUTH", 10000, 0, 10000) == _facts(opened), opened
    doc = opened.json()
    pid = doc["preauth_id"]
    assert pid
    assert ("transaction_completed", "pa-1", True, iid) == (
        doc["type"],
        doc["pos_ref_id"],
        doc["approved"],
        doc["instance_id"],
    )
    assert "pa-1" in opened.err  # progress goes to stderr under --json

    step = ("--preauth-id", pid)
    topup = await cli.run("tx", "preauth", "topup", iid, *step, "--amount", "50")
    reduced = await cli.run("tx", "preauth", "partial-cancel", iid, *step, "--amount", "20.00")
    extended = await cli.run("tx", "preauth", "extend", iid, *step)
    completed = await cli.run(
        "tx", "preauth", "complete", iid, *step, "--amount", "120", "--surcharge", "1.50"
    )
    assert [
        (0, "success", "preauth_topup", "TOPUP", 5000, 10000, 15000),
        (0, "success", "preauth_partial_cancel", "CANCEL", 2000, 15000, 13000),
        (0, "success", "preauth_extend", "PRE-AUTH EXT", 0, 13000, 13000),
        (0, "success", "preauth_complete", "PCOMP", 12000, 12000, 0),
    ] == [_facts(r) for r in (topup, reduced, extended, completed)]
    assert {pid} == {r.json()["preauth_id"] for r in (topup, reduced, extended, completed)}
    assert 150 == completed.json()["surcharge_cents"]
    refs = {r.json()["pos_ref_id"] for r in (topup, reduced, extended, completed)}
    assert 4 == len(refs)
    assert all(ref.startswith("mp-") for ref in refs)  # each step its own, new, reference

    again = await cli.run("tx", "preauth", "complete", iid, *step, "--amount", "1")
    assert 1 == again.code, again
    assert ("failed", "PRE_AUTH_ID_ALREADY_COMPLETED") == (
        again.json()["result"],
        again.json()["error_reason"],
    )


async def test_a_preauth_for_people_shows_its_id_and_balance(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    opened = await cli.run(
        "tx", "preauth", "open", iid, "--amount", "40", "--pos-ref-id", "pa-h1", json=False
    )
    assert 0 == opened.code, opened
    lines = opened.out.splitlines()
    assert f"preauth open $40.00 on lane {iid}, pos_ref_id pa-h1" == lines[0]
    assert "APPROVED  preauth open $40.00  pos_ref_id pa-h1" in lines
    (pid_line,) = [text for text in lines if text.startswith("  preauth id")]
    pid = pid_line.split()[-1]
    assert "  terminal type  PRE-AUTH" in lines
    assert "  balance        $0.00 → $40.00" in lines

    cancelled = await cli.run(
        "tx", "preauth", "cancel", iid, "--preauth-id", pid, "--pos-ref-id", "pa-h2", json=False
    )
    assert 0 == cancelled.code, cancelled
    lines = cancelled.out.splitlines()
    assert f"preauth cancel (preauth {pid}) on lane {iid}, pos_ref_id pa-h2" == lines[0]
    assert any(text.startswith("APPROVED  preauth cancel") for text in lines), lines
    assert "  terminal type  PRE-AUTH CANCEL" in lines
    assert "  balance        $40.00 → $0.00" in lines

    looked_up = await cli.run("tx", "status", iid, "--pos-ref-id", "pa-h1", json=False)
    assert 0 == looked_up.code, looked_up
    assert f"  preauth id     {pid}" in looked_up.out.splitlines()


async def test_a_declined_preauth_exits_1_and_an_unknown_preauth_id_too(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    declined = await cli.run("tx", "preauth", "open", iid, "--amount", "10.51")
    unknown = await cli.run(
        "tx", "preauth", "topup", iid, "--preauth-id", "99999999", "--amount", "5"
    )
    assert (1, 1) == (declined.code, unknown.code), (declined, unknown)
    assert ("failed", "51", None) == (
        declined.json()["result"],
        declined.json()["host_response_code"],
        declined.json()["preauth_id"],
    )
    assert "PRE_AUTH_ID_NOT_FOUND" == unknown.json()["error_reason"]


async def test_account_verify_exits_0_with_no_amount(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    machine, human = await asyncio.gather(
        cli.run("tx", "account-verify", iid, "--pos-ref-id", "av-1"),
        cli.run("tx", "account-verify", iid, "--pos-ref-id", "av-2", json=False),
    )
    assert (0, "success", "account_verify", "VERIFY", 0, None, None) == _facts(machine)
    assert 0 == human.code, human
    lines = human.out.splitlines()
    assert f"account verify on lane {iid}, pos_ref_id av-2" == lines[0]
    assert "APPROVED  account verify  pos_ref_id av-2" in lines


async def test_a_zip_purchase_and_its_refund_exit_0_with_the_zip_receipt(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    bought = await cli.run(
        "tx",
        "zip-purchase",
        iid,
        "--amount",
        "30",
        "--store-code",
        "store-7",
        "--description",
        "two lamps",
        "--pos-ref-id",
        "zip-1",
    )
    assert 0 == bought.code, bought
    doc = bought.json()
    assert ("success", "zip_purchase", 3000, "store-7") == (
        doc["result"],
        doc["tx_type"],
        doc["amount_cents"],
        doc["zip_data"]["store_code"],
    )
    receipt = doc["zip_data"]["receipt_number"]
    assert receipt

    refunded = await cli.run(
        "tx",
        "zip-refund",
        iid,
        "--amount",
        "10",
        "--original-receipt-number",
        receipt,
        "--pos-ref-id",
        "zip-2",
        json=False,
    )
    assert 0 == refunded.code, refunded
    lines = refunded.out.splitlines()
    assert (
        f"zip refund $10.00 (original receipt {receipt}) on lane {iid}, pos_ref_id zip-2"
        == lines[0]
    )
    assert "APPROVED  zip refund $10.00  pos_ref_id zip-2" in lines
    (zip_line,) = [text for text in lines if text.startswith("  zip ")]
    assert f"original receipt {receipt}" in zip_line, zip_line


async def test_what_the_contract_requires_is_required_and_nothing_is_sent_otherwise(
    cli: Cli, lane: LaneRig
) -> None:
    iid = lane.instance_id
    cases = {
        ("preauth", "topup", iid, "--amount", "1"): "required: --preauth-id",
        ("preauth", "extend", iid): "required: --preauth-id",
        ("preauth", "complete", iid, "--preauth-id", "1"): "required: --amount",
        ("preauth", "open", iid, "--amount", "1.234"): "more than 2 decimal places",
        ("zip-purchase", iid, "--amount", "1"): "required: --store-code",
        ("zip-refund", iid, "--amount", "1"): "required: --original-receipt-number",
        ("preauth", "cancel", iid, "--preauth-id", "has space"): "preauth_id",
        ("zip-purchase", iid, "--amount", "1", "--store-code", ""): "store_code",
    }
    results = await asyncio.gather(*(cli.run("tx", *args) for args in cases))
    for (args, why), result in zip(cases.items(), results, strict=True):
        assert 2 == result.code, result
        assert ("", 1) == (result.out, len(result.error_lines())), result
        assert why in result.err, (args, result)
    assert [] == await lane.txs.in_flight(iid)


async def test_no_outcome_in_time_exits_3(cli: Cli, lane: LaneRig) -> None:
    iid = lane.instance_id
    try:
        result = await cli.run(
            *("tx", "preauth", "open", iid, "--amount", "10.55"),
            *("--pos-ref-id", "pa-slow", "--timeout", "1"),
        )
    finally:
        await lane.send({"type": "cancel", "pos_ref_id": "pa-slow"})
        await lane.events.wait_for(
            lambda b: b["type"] == "transaction_completed" and b.get("pos_ref_id") == "pa-slow"
        )
    assert 3 == result.code, result
    assert ("preauth_open", "unknown", True) == (
        result.json()["tx_type"],
        result.json()["result"],
        result.json()["timed_out"],
    )
    assert f"`multipair tx status {iid} --pos-ref-id pa-slow`" in result.error_lines()[-1]


async def test_the_completion_script_knows_the_new_actions() -> None:
    made = await run([*script(), "completion", "bash"])
    assert 0 == made.code, made
    probe = (
        made.out + "\nfor words in 'multipair tx ' 'multipair tx preauth ' "
        "'multipair tx preauth complete --s' 'multipair tx zip-refund --o'; do\n"
        '  read -ra COMP_WORDS <<< "$words"; [[ "$words" == *" " ]] && COMP_WORDS+=("")\n'
        '  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _multipair; echo "${COMPREPLY[*]}"\n'
        "done\n"
    )
    shown = await run(["bash", "-c", probe])
    assert 0 == shown.code, shown
    actions, steps, complete, zip_refund = shown.out.splitlines()
    assert {"preauth", "account-verify", "zip-purchase", "zip-refund"} <= set(actions.split())
    assert {"open", "topup", "partial-cancel", "extend", "cancel", "complete"} <= set(steps.split())
    assert "--surcharge" == complete
    assert "--original-receipt-number" == zip_refund


async def test_an_unknown_lane_exits_2_before_anything_is_sent(cli: Cli) -> None:
    lane = str(uuid.uuid4())
    result = await cli.run("tx", "preauth", "extend", lane, "--preauth-id", "1")
    assert 2 == result.code, result
    assert [f"multipair: error: lane {lane} not found"] == result.error_lines()
