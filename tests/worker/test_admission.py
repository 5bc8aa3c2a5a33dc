"""What a lane does with a command, decided without Redis (multipair.worker.admission)."""

from __future__ import annotations

import datetime as _dt

import orjson
import pytest

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, LocalProtocolError
from multipair.spi.pos import SpiFlow
from multipair.store.transactions import TxRecord, TxState
from multipair.worker.admission import (
    POISON_DELIVERIES,
    AnswerFromRecord,
    Claim,
    Decision,
    Readiness,
    Refuse,
    Resume,
    Run,
    WaitForTerminal,
    admit,
    can_start_now,
    expired,
    gives_up,
    judge_claim,
)
from multipair.worker.translate import claim_of

PURCHASE = bs.Purchase(command_id="c-1", pos_ref_id="r-1", amount_cents=1000)
SETTLE = bs.Settle(command_id="s-1")

READY = Readiness(paired=True, ready=True, flow=SpiFlow.IDLE)
LINK_DOWN = Readiness(paired=True, ready=False, flow=SpiFlow.IDLE)
BUSY = Readiness(paired=True, ready=True, flow=SpiFlow.TRANSACTION)
UNPAIRED = Readiness(paired=False, ready=False, flow=SpiFlow.IDLE)


def _record(state: TxState, command_id: str = "c-1") -> TxRecord:
    return TxRecord(
        pos_ref_id="r-1",
        command_id=command_id,
        tx_type="purchase",
        amount_cents=1000,
        state=state,
        result=bs.TxResult.SUCCESS if state is TxState.COMPLETED else None,
    )


def _kind(decision: Decision) -> str:
    """The decision's type, with a refusal's reason (or SPI wording) after a colon."""
    if isinstance(decision, Refuse):
        error = decision.error
        why = str(error.reason) if isinstance(error, CommandError) else str(error).split(":")[0]
        return f"refuse:{why}"
    if isinstance(decision, Run) and decision.create_record:
        return "run:create_record"
    return decision.type


@pytest.mark.parametrize(
    ("command", "record", "readiness", "waited", "expected"),
    [
        # A new transaction: no record yet.
        (PURCHASE, None, READY, False, "run:create_record"),
        (PURCHASE, None, LINK_DOWN, False, "wait_for_terminal"),
        (PURCHASE, None, LINK_DOWN, True, "run:create_record"),  # waited once: go on
        (PURCHASE, None, BUSY, False, "refuse:Not Idle"),
        (PURCHASE, None, UNPAIRED, False, "refuse:Not Paired"),
        # Its record exists, still `requested`: never left a process, run it.
        (PURCHASE, _record(TxState.REQUESTED), READY, False, "run"),
        (PURCHASE, _record(TxState.REQUESTED), LINK_DOWN, False, "wait_for_terminal"),
        (PURCHASE, _record(TxState.REQUESTED), BUSY, True, "refuse:Not Idle"),
        # It may have reached the terminal: ask it, never send again (link up or not).
        (PURCHASE, _record(TxState.SENT), READY, False, "resume"),
        (PURCHASE, _record(TxState.SENT), LINK_DOWN, False, "resume"),
        (PURCHASE, _record(TxState.AWAITING_SIGNATURE), BUSY, False, "resume"),
        # Completed: answered from the record, even unpaired.
        (PURCHASE, _record(TxState.COMPLETED), READY, False, "answer_from_record"),
        (PURCHASE, _record(TxState.COMPLETED), UNPAIRED, False, "answer_from_record"),
        # The pos_ref_id belongs to another command.
        (PURCHASE, _record(TxState.SENT, "c-0"), READY, False, "refuse:duplicate_pos_ref_id"),
        (PURCHASE, _record(TxState.COMPLETED, "c-0"), READY, False, "refuse:duplicate_pos_ref_id"),
        # A settle keeps no record: ready and idle, or wait, or refused.
        (SETTLE, None, READY, False, "run"),
        (SETTLE, None, LINK_DOWN, False, "wait_for_terminal"),
        (SETTLE, None, LINK_DOWN, True, "run"),
        (SETTLE, None, BUSY, False, "refuse:Not Idle"),
        (SETTLE, None, UNPAIRED, False, "refuse:Not Paired"),
    ],
)
def test_admit_decides_from_the_record_and_the_readiness(
    command: bs.Command, record: TxRecord | None, readiness: Readiness, waited: bool, expected: str
) -> None:
    assert expected == _kind(admit(command, record, readiness, waited=waited))


def test_every_decision_is_reachable() -> None:
    kinds = {
        type(admit(PURCHASE, None, READY, waited=False)),
        type(admit(PURCHASE, None, LINK_DOWN, waited=False)),
        type(admit(PURCHASE, _record(TxState.SENT), READY, waited=False)),
        type(admit(PURCHASE, _record(TxState.COMPLETED), READY, waited=False)),
        type(admit(PURCHASE, None, BUSY, waited=False)),
    }
    assert {Run, WaitForTerminal, Resume, AnswerFromRecord, Refuse} == kinds


@pytest.mark.parametrize(
    ("command", "prior", "expected"),
    [
        (PURCHASE, None, Claim.FIRST),
        (PURCHASE, claim_of(PURCHASE, "1-0"), Claim.REDELIVERY),  # the same entry again
        (PURCHASE, claim_of(PURCHASE, "0-1"), Claim.SAME_MONEY),  # repeated: answered from record
        (
            bs.Purchase(command_id="c-1", pos_ref_id="r-2", amount_cents=5),
            claim_of(PURCHASE, "0-1"),
            "duplicate_command_id",
        ),
        (
            bs.Refund(command_id="c-1", pos_ref_id="r-1", amount_cents=5),
            claim_of(PURCHASE, "0-1"),
            "duplicate_command_id",
        ),
        (SETTLE, claim_of(SETTLE, "1-0"), Claim.REDELIVERY),
        (SETTLE, claim_of(SETTLE, "0-1"), "duplicate_command_id"),  # keeps no record
        (bs.Pair(command_id="c-1"), orjson.dumps({"type": "pair"}), "duplicate_command_id"),
    ],
)
def test_a_command_id_claim_is_judged_by_entry_type_and_pos_ref_id(
    command: bs.Command, prior: bytes | None, expected: Claim | str
) -> None:
    verdict = judge_claim(command, "1-0", prior)
    if isinstance(verdict, Refuse):
        assert isinstance(verdict.error, CommandError)
        assert expected == str(verdict.error.reason)
    else:
        assert expected == verdict


def test_the_duplicate_command_id_refusal_names_the_first_user() -> None:
    verdict = judge_claim(
        bs.Purchase(command_id="c-1", pos_ref_id="r-2", amount_cents=5),
        "1-0",
        claim_of(PURCHASE, "0-1"),
    )
    assert isinstance(verdict, Refuse)
    assert isinstance(verdict.error, CommandError)
    assert "command_id 'c-1' was already used by purchase r-1" == verdict.error.detail


def test_only_a_linked_paired_idle_lane_starts_at_once() -> None:
    assert (True, False, False, False) == tuple(
        can_start_now(r) for r in (READY, LINK_DOWN, BUSY, UNPAIRED)
    )


def test_refusals_keep_the_sessions_words() -> None:
    refused = admit(PURCHASE, None, BUSY, waited=False)
    assert isinstance(refused, Refuse)
    assert isinstance(refused.error, LocalProtocolError)
    assert "Not Idle: the lane is in flow transaction" == str(refused.error)


def test_expiry_and_the_poison_rule() -> None:
    now = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    late = bs.Purchase(command_id="c", pos_ref_id="r", amount_cents=1, expires_at=now)
    assert (True, False, False) == (
        expired(late, now),
        expired(late, now - _dt.timedelta(seconds=1)),
        expired(PURCHASE, now),
    )
    assert (False, True, False) == (
        gives_up(POISON_DELIVERIES - 1, has_record=False),
        gives_up(POISON_DELIVERIES, has_record=False),
        gives_up(POISON_DELIVERIES, has_record=True),
    )
