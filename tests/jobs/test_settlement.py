"""The settlement's decisions and totals, without Redis (multipair.jobs.settlement)."""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any

import pytest

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, LocalProtocolError
from multipair.jobs.settlement import (
    Attempt,
    Done,
    LaneRecord,
    LaneState,
    OurTotals,
    Readiness,
    Resolve,
    TerminalTotals,
    Why,
    business_day,
    mismatch,
    move,
    our_totals,
    plan,
    readiness,
    settle_command_id,
    summarize,
    verdict,
)
from multipair.store.transactions import TxRecord, TxState

IID = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
NOW = _dt.datetime(2025, 1, 31, 12, 0, tzinfo=_dt.UTC)
STAMP = bs.format_time(NOW)


def entry(state: LaneState, attempt: int = 0, **fields: Any) -> LaneRecord:
    return LaneRecord(instance_id=IID, state=state, updated_at=STAMP, attempt=attempt, **fields)


# ---------------------------------------------------------------------- plan and move


def test_a_lane_never_tried_today_gets_attempt_1() -> None:
    assert Attempt(1) == plan(None)


def test_a_settled_lane_is_done_whatever_is_asked() -> None:
    settled = entry(LaneState.SETTLED, 1)
    assert Done(settled) == plan(settled)
    assert Done(settled) == plan(settled, retry_unknown=True)


def test_an_attempt_recorded_as_sending_is_resolved_not_sent_anew() -> None:
    sending = entry(LaneState.SENDING, 2, command_id=settle_command_id("2025-01-31", IID, 2))
    assert Resolve(sending) == plan(sending)


def test_a_failed_lane_gets_the_next_attempt_number() -> None:
    assert Attempt(3) == plan(entry(LaneState.FAILED, 2, reason=Why.SETTLEMENT_FAILED))
    assert Attempt(1) == plan(entry(LaneState.FAILED, 0, reason=Why.OFFLINE))


def test_an_unknown_settlement_is_settled_again_only_when_asked() -> None:
    unknown = entry(LaneState.UNKNOWN, 1, reason=Why.SETTLEMENT_UNKNOWN)
    assert Done(unknown) == plan(unknown)
    assert Attempt(2) == plan(unknown, retry_unknown=True)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (LaneState.SETTLED, LaneState.SENDING),
        (LaneState.SETTLED, LaneState.FAILED),
        (LaneState.FAILED, LaneState.SETTLED),
        (None, LaneState.SETTLED),
        (LaneState.UNKNOWN, LaneState.SETTLED),
    ],
)
def test_moves_outside_the_table_are_refused(before: LaneState | None, after: LaneState) -> None:
    old = None if before is None else entry(before, 1)
    with pytest.raises(LocalProtocolError):
        move(old, entry(after, 1))


def test_the_attempt_number_never_goes_back() -> None:
    with pytest.raises(LocalProtocolError):
        move(entry(LaneState.FAILED, 2), entry(LaneState.SENDING, 1))
    assert LaneState.SENDING == move(entry(LaneState.FAILED, 2), entry(LaneState.SENDING, 3)).state


def test_the_command_id_names_day_lane_and_attempt() -> None:
    assert f"settle:2025-01-31:{IID}:2" == settle_command_id("2025-01-31", IID, 2)


def test_an_entry_survives_its_json_form() -> None:
    full = entry(
        LaneState.SETTLED,
        1,
        command_id="c",
        cursor="1-0",
        sent_at=STAMP,
        expires_at=STAMP,
        pos_id="POS1",
        serial_number="SIM-0001",
        tenant_code="wbc",
        terminal=TerminalTotals(count=2, value_cents=300, settled_at=STAMP),
        ours=OurTotals(count=2, value_cents=300, purchase_count=2, purchase_value_cents=300),
        mismatch=False,
    )
    assert full == LaneRecord.from_json(full.to_json())


# ---------------------------------------------------------------------- readiness


def state(**fields: str) -> dict[str, str]:
    base = {
        "status": "paired_connected",
        "flow": "idle",
        "heartbeat_at": bs.format_time(NOW - _dt.timedelta(seconds=1)),
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Readiness.READY),
        ({"flow": "transaction"}, Readiness.BUSY),
        ({"flow": "pairing"}, Readiness.BUSY),
        ({"status": "paired_connecting"}, Readiness.OFFLINE),
        ({"status": "unpaired"}, Readiness.NOT_PAIRED),
        ({"heartbeat_at": bs.format_time(NOW - _dt.timedelta(seconds=30))}, Readiness.OFFLINE),
        ({"heartbeat_at": ""}, Readiness.OFFLINE),
    ],
)
def test_readiness_comes_from_the_state_hash(fields: dict[str, str], expected: Readiness) -> None:
    assert expected == readiness(state(**fields), NOW)[0]


def test_an_offline_lane_says_why() -> None:
    _, detail = readiness(state(status="paired_connecting", last_error="refused"), NOW)
    assert "not connected (paired_connecting): refused" in detail
    _, detail = readiness({}, NOW)
    assert "not running" in detail


# ---------------------------------------------------------------------- verdicts


def settlement(result: str, **fields: Any) -> bs.Settlement:
    return bs.Settlement(instance_id=IID, at=NOW, command_id="c", result=result, **fields)


def rejected(reason: str, detail: str = "no") -> bs.CommandRejected:
    return bs.CommandRejected(instance_id=IID, at=NOW, command_id="c", reason=reason, detail=detail)


def test_a_successful_settlement_carries_the_terminals_totals_by_scheme() -> None:
    found = verdict(
        settlement(
            "success",
            host_response_code="941",
            host_response_text="CUTOVER COMPLETE",
            accumulated_total_count=3,
            accumulated_total_value_cents=4200,
            schemes=(
                {"scheme_name": "Visa", "total_count": 2, "total_value_cents": 3000},
                {"scheme_name": "Debit", "total_count": "1", "total_value_cents": "1200"},
            ),
        )
    )
    assert (LaneState.SETTLED, None) == (found.state, found.reason)
    assert found.terminal is not None
    assert (3, 4200) == (found.terminal.count, found.terminal.value_cents)
    assert [("Visa", 2, 3000), ("Debit", 1, 1200)] == [
        (s.scheme, s.count, s.value_cents) for s in found.terminal.schemes
    ]
    assert STAMP == found.terminal.settled_at


@pytest.mark.parametrize(
    ("event", "state", "why"),
    [
        (
            settlement("failed", error_reason="HOST_DECLINED"),
            LaneState.FAILED,
            Why.SETTLEMENT_FAILED,
        ),
        (settlement("unknown"), LaneState.UNKNOWN, Why.SETTLEMENT_UNKNOWN),
        (rejected("duplicate_command_id"), LaneState.UNKNOWN, Why.ANSWER_LOST),
        (rejected("terminal_unavailable"), LaneState.FAILED, Why.OFFLINE),
        (rejected("expired"), LaneState.FAILED, Why.BUSY),
        (rejected("not_allowed", "Not Idle: the lane is in flow x"), LaneState.FAILED, Why.BUSY),
        (rejected("not_allowed", "Not Paired: pair first"), LaneState.FAILED, Why.NOT_PAIRED),
        (rejected("internal_error"), LaneState.FAILED, Why.REJECTED),
    ],
)
def test_every_answer_to_settle_has_one_meaning(
    event: bs.Event, state: LaneState, why: Why
) -> None:
    found = verdict(event)
    assert (state, why) == (found.state, found.reason)


# ---------------------------------------------------------------------- our totals


def record(ref: str, tx_type: str, cents: int, result: str | None, **extra: Any) -> TxRecord:
    done = result is not None
    return TxRecord(
        pos_ref_id=ref,
        command_id=f"c-{ref}",
        tx_type=tx_type,
        amount_cents=cents,
        state=TxState.COMPLETED if done else TxState.SENT,
        result=None if result is None else bs.TxResult(result),
        **extra,
    )


def test_our_totals_count_approved_transactions_as_the_terminal_does() -> None:
    records = [
        record("a", "purchase", 1000, "success", tip_cents=100, surcharge_cents=10),
        record("b", "moto_purchase", 500, "success"),
        record("c", "purchase", 1051, "failed"),
        record("d", "refund", 300, "success"),
        record("e", "cashout", 2000, "success"),
        record("f", "purchase", 700, "unknown"),
        record("g", "purchase", 800, None),
    ]
    totals = our_totals(records, window_start=NOW, window_end=NOW)
    assert (4, 1110 + 500 - 300 + 2000) == (totals.count, totals.value_cents)
    assert (2, 1610, 1, -300, 1, 2000) == (
        totals.purchase_count,
        totals.purchase_value_cents,
        totals.refund_count,
        totals.refund_value_cents,
        totals.cashout_count,
        totals.cashout_value_cents,
    )
    assert (1, 1) == (totals.open, totals.unknown)


def test_a_preauth_counts_once_completed_and_zip_not_at_all() -> None:
    records = [
        record("p1", "preauth_open", 5000, "success"),
        record("p2", "preauth_topup", 1000, "success"),
        record("p3", "preauth_complete", 6000, "success", surcharge_cents=60),
        record("p4", "preauth_complete", 100, "failed"),
        record("z1", "zip_purchase", 4500, "success"),
        record("z2", "zip_refund", 4500, "success"),
        record("v1", "account_verify", 0, "success"),
    ]
    totals = our_totals(records, window_start=NOW, window_end=NOW)
    assert (1, 6060, 1, 6060) == (
        totals.count,
        totals.value_cents,
        totals.purchase_count,
        totals.purchase_value_cents,
    )


def test_a_difference_in_count_or_value_is_a_mismatch() -> None:
    terminal = TerminalTotals(count=2, value_cents=2000)
    assert not mismatch(terminal, OurTotals(count=2, value_cents=2000))
    assert mismatch(terminal, OurTotals(count=1, value_cents=2000))
    assert mismatch(terminal, OurTotals(count=2, value_cents=1999))


def test_the_fleet_summary_adds_settled_lanes_only() -> None:
    visa = {"scheme_name": "Visa", "total_count": 1, "total_value_cents": 1000}
    first = verdict(
        settlement(
            "success",
            accumulated_total_count=1,
            accumulated_total_value_cents=1000,
            schemes=(visa,),
        )
    )
    settled = entry(
        LaneState.SETTLED,
        1,
        terminal=first.terminal,
        ours=OurTotals(count=1, value_cents=1000),
        mismatch=False,
    )
    flagged = LaneRecord(
        instance_id=str(uuid.uuid4()),
        state=LaneState.SETTLED,
        updated_at=STAMP,
        terminal=first.terminal,
        ours=OurTotals(count=0, value_cents=0),
        mismatch=True,
    )
    failed = entry(LaneState.FAILED, 1, reason=Why.OFFLINE)
    totals = summarize([settled, flagged, failed])
    assert (3, 2, 1, 1) == (
        totals["lanes"],
        totals["settled"],
        totals["failed"],
        totals["mismatched"],
    )
    assert {
        "count": 2,
        "value_cents": 2000,
        "schemes": {"Visa": {"count": 2, "value_cents": 2000}},
    } == totals["terminal"]
    assert {"count": 1, "value_cents": 1000} == totals["ours"]
    assert [flagged.instance_id] == totals["mismatched_lanes"]


def test_a_business_day_is_a_calendar_date() -> None:
    assert "2025-01-31" == business_day("2025-01-31", NOW)
    assert NOW.astimezone().date().isoformat() == business_day(None, NOW)
    for bad in ("2025-02-30", "31/01/2025", "2025-1-31", ""):
        with pytest.raises(CommandError):
            business_day(bad, NOW)
