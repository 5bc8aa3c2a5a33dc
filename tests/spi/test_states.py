"""One word per concept (STYLE.md §14): the session, the contract and the record share enums."""

from __future__ import annotations

import pytest

import multipair.broker_schema as bs
from multipair.exceptions import LocalProtocolError
from multipair.spi import messages as m
from multipair.spi import pos
from multipair.spi.pos.transaction import Transaction
from multipair.spi.states import TX_MOVES, Outcome, SpiFlow, SpiStatus, TxPhase
from multipair.store.transactions import TxState


def test_the_contract_and_the_record_use_the_protocol_enums() -> None:
    expected = (SpiStatus, SpiFlow, Outcome, TxPhase, TxPhase)
    assert expected == (bs.Status, bs.Flow, bs.TxResult, TxState, pos.TxPhase)
    assert (SpiStatus, SpiFlow, Outcome) == (pos.SpiStatus, pos.SpiFlow, pos.Outcome)


def test_values_that_travel_stay_as_published() -> None:
    """Events, the state hash and Redis records carry these values: they never change."""
    assert ["unpaired", "paired_connecting", "paired_connected"] == [str(s) for s in SpiStatus]
    assert ["idle", "pairing", "transaction"] == [str(f) for f in SpiFlow]
    assert ["success", "failed", "unknown"] == [str(o) for o in Outcome]
    assert [
        "requested",
        "sent",
        "awaiting_signature",
        "awaiting_auth_code",
        "completed",
    ] == [str(p) for p in TxPhase]


def test_every_phase_but_completed_can_complete_and_completed_is_final() -> None:
    assert set(TxPhase) == set(TX_MOVES)
    assert frozenset() == TX_MOVES[TxPhase.COMPLETED]
    assert all(TxPhase.COMPLETED in TX_MOVES[p] for p in TxPhase if p is not TxPhase.COMPLETED)


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (TxPhase.REQUESTED, TxPhase.AWAITING_SIGNATURE),
        (TxPhase.SENT, TxPhase.REQUESTED),
        (TxPhase.COMPLETED, TxPhase.SENT),
    ],
)
def test_a_transaction_refuses_a_move_the_table_does_not_allow(
    start: TxPhase, target: TxPhase
) -> None:
    tx = Transaction(
        pos_ref_id="order-1", tx_type=m.TxType.PURCHASE, response_event="x", request=None
    )
    tx.phase = start
    with pytest.raises(LocalProtocolError):
        tx.move(target)
    assert start == tx.phase
