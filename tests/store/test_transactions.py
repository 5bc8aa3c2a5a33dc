"""TxStore against a real Redis: one record per pos_ref_id, a state table, one outcome."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import redis.asyncio as aioredis

from multipair.broker_schema import (
    CommandAccepted,
    Keys,
    TransactionCompleted,
    TxResult,
    decode_event,
    encode_event,
    event_from_json,
    event_to_json,
)
from multipair.exceptions import CommandError, InternalError, LocalProtocolError
from multipair.leases import LeaseLost
from multipair.store import TxRecord, TxState, TxStore
from multipair.store.transactions import Begun

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
T0 = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)


def _record(pos_ref_id: str = "order-17", **changes: Any) -> TxRecord:
    values: dict[str, Any] = {
        "pos_ref_id": pos_ref_id,
        "command_id": f"cmd-{pos_ref_id}",
        "tx_type": "purchase",
        "amount_cents": 1250,
        "tip_cents": 200,
        "created_at": T0,
    }
    values.update(changes)
    return TxRecord(**values)


def _outcome(pos_ref_id: str = "order-17", result: str = "success") -> bytes:
    return event_to_json(
        TransactionCompleted(
            instance_id=LANE,
            at=T0,
            command_id=f"cmd-{pos_ref_id}",
            result=result,
            pos_ref_id=pos_ref_id,
            tx_type="purchase",
            amount_cents=1250,
            host_response_code="000",
        )
    )


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def txs(redis: aioredis.Redis, keys: Keys) -> TxStore:
    return TxStore(redis, keys)


# --- one record per pos_ref_id ---------------------------------------------------------------


async def test_new_record_is_created_and_reads_back(txs: TxStore) -> None:
    record, created = await txs.create_if_absent(LANE, _record())
    assert (True, _record(), record) == (created, record, await txs.get(LANE, "order-17"))


async def test_repeated_pos_ref_id_returns_the_first_record(txs: TxStore) -> None:
    first, _ = await txs.create_if_absent(LANE, _record())
    again, created = await txs.create_if_absent(
        LANE, _record(command_id="another-command", amount_cents=9999)
    )
    assert (False, first) == (created, again)


async def test_twenty_concurrent_creators_make_exactly_one_record(
    redis_url: str, keys: Keys
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(20)]
    try:
        stores = [TxStore(client, keys) for client in clients]
        results = await asyncio.gather(
            *(
                store.create_if_absent(LANE, _record(command_id=f"racer-{i}"))
                for i, store in enumerate(stores)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    winners = [record for record, created in results if created]
    assert 1 == len(winners)
    assert [winners[0]] * 20 == [record for record, _ in results]


async def test_record_of_an_unknown_pos_ref_id_is_none(txs: TxStore) -> None:
    assert None is await txs.get(LANE, "never")


# --- the state table --------------------------------------------------------------------------


async def test_record_goes_through_signature_and_completes(txs: TxStore) -> None:
    await txs.create_if_absent(LANE, _record())
    t1 = T0 + dt.timedelta(seconds=1)
    sent = await txs.update_state(
        LANE, "order-17", TxState.SENT, request_message_id="prchs3", now=t1
    )
    await txs.update_state(LANE, "order-17", TxState.AWAITING_SIGNATURE, now=t1)
    await txs.update_state(LANE, "order-17", TxState.SENT, now=t1)
    done, completed = await txs.complete(
        LANE, "order-17", result=TxResult.SUCCESS, outcome=_outcome(), now=t1
    )
    assert (TxState.SENT, "prchs3", t1) == (sent.state, sent.request_message_id, sent.updated_at)
    assert (True, TxState.COMPLETED, TxResult.SUCCESS, "prchs3") == (
        completed,
        done.state,
        done.result,
        done.request_message_id,
    )


async def test_repeating_the_current_state_is_allowed(txs: TxStore) -> None:
    await txs.create_if_absent(LANE, _record())
    await txs.update_state(LANE, "order-17", TxState.SENT)
    assert TxState.SENT == (await txs.update_state(LANE, "order-17", TxState.SENT)).state


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], TxState.AWAITING_SIGNATURE),
        ([], TxState.AWAITING_AUTH_CODE),
        ([TxState.SENT], TxState.REQUESTED),
        ([TxState.SENT, TxState.AWAITING_AUTH_CODE], TxState.REQUESTED),
    ],
)
async def test_illegal_move_is_a_local_protocol_error(
    txs: TxStore, path: list[TxState], illegal: TxState
) -> None:
    await txs.create_if_absent(LANE, _record())
    for state in path:
        await txs.update_state(LANE, "order-17", state)
    with pytest.raises(LocalProtocolError):
        await txs.update_state(LANE, "order-17", illegal)
    record = await txs.get(LANE, "order-17")
    assert record is not None
    assert (path or [TxState.REQUESTED])[-1] == record.state


async def test_completed_record_never_moves_again(txs: TxStore) -> None:
    await txs.create_if_absent(LANE, _record())
    await txs.complete(LANE, "order-17", result=TxResult.FAILED, outcome=_outcome(result="failed"))
    with pytest.raises(LocalProtocolError):
        await txs.update_state(LANE, "order-17", TxState.SENT)


async def test_completing_through_update_state_is_refused(txs: TxStore) -> None:
    await txs.create_if_absent(LANE, _record())
    with pytest.raises(LocalProtocolError):
        await txs.update_state(LANE, "order-17", TxState.COMPLETED)


async def test_moving_a_missing_record_is_a_local_protocol_error(txs: TxStore) -> None:
    with pytest.raises(LocalProtocolError):
        await txs.update_state(LANE, "never", TxState.SENT)
    with pytest.raises(LocalProtocolError):
        await txs.complete(LANE, "never", result=TxResult.SUCCESS, outcome=b"{}")


# --- one outcome -----------------------------------------------------------------------------


async def test_first_outcome_stands(txs: TxStore) -> None:
    await txs.create_if_absent(LANE, _record())
    first, completed_first = await txs.complete(
        LANE, "order-17", result=TxResult.SUCCESS, outcome=_outcome()
    )
    second, completed_second = await txs.complete(
        LANE, "order-17", result=TxResult.FAILED, outcome=_outcome(result="failed")
    )
    assert (True, False, first, TxResult.SUCCESS) == (
        completed_first,
        completed_second,
        second,
        second.result,
    )


async def test_outcome_is_recorded_and_published_together_once(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    await txs.create_if_absent(LANE, _record())
    event = event_from_json(_outcome())
    for result in (TxResult.SUCCESS, TxResult.FAILED):
        await txs.complete(
            LANE,
            "order-17",
            result=result,
            outcome=_outcome(),
            publish_to=keys.events(LANE),
            publish_fields=encode_event(event),
            maxlen=100,
        )
    entries: Any = await redis.xrange(keys.events(LANE))
    assert [event] == [decode_event(fields) for _, fields in entries]


async def test_outcome_is_published_only_to_a_stream_of_the_same_lane(
    txs: TxStore, keys: Keys
) -> None:
    await txs.create_if_absent(LANE, _record())
    other_lane = "0b9d5f7e-58d1-4c55-9a3b-0f0e4b7c2d11"
    with pytest.raises(InternalError):
        await txs.complete(
            LANE,
            "order-17",
            result=TxResult.SUCCESS,
            outcome=_outcome(),
            publish_to=keys.events(other_lane),
            publish_fields=encode_event(event_from_json(_outcome())),
        )


async def test_outcome_rebuilds_the_published_event(txs: TxStore) -> None:
    await txs.create_if_absent(LANE, _record())
    record, _ = await txs.complete(LANE, "order-17", result=TxResult.SUCCESS, outcome=_outcome())
    event = record.outcome_event()
    assert isinstance(event, TransactionCompleted)
    assert (_outcome(), "000") == (event_to_json(event), event.host_response_code)


async def test_completed_record_expires_after_the_retention(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    await txs.create_if_absent(LANE, _record())
    ttl_open = await redis.ttl(keys.tx(LANE, "order-17"))
    await txs.complete(LANE, "order-17", result=TxResult.SUCCESS, outcome=_outcome())
    ttl_done = await redis.ttl(keys.tx(LANE, "order-17"))
    assert (-1, True) == (ttl_open, 30 * 86400 - 5 <= ttl_done <= 30 * 86400)


async def test_records_are_kept_forever_without_retention(
    redis: aioredis.Redis, keys: Keys
) -> None:
    txs = TxStore(redis, keys, retention=None)
    await txs.create_if_absent(LANE, _record())
    await txs.complete(LANE, "order-17", result=TxResult.SUCCESS, outcome=_outcome())
    assert -1 == await redis.ttl(keys.tx(LANE, "order-17"))


# --- in flight ----------------------------------------------------------------------------


async def test_in_flight_lists_records_not_completed_oldest_first(txs: TxStore) -> None:
    for minutes_ago, ref in [(1, "b-late"), (2, "a-early"), (0, "c-done")]:
        created = T0 - dt.timedelta(minutes=minutes_ago)
        await txs.create_if_absent(LANE, _record(ref, created_at=created))
    await txs.update_state(LANE, "b-late", TxState.SENT)
    await txs.complete(LANE, "c-done", result=TxResult.UNKNOWN, outcome=_outcome("c-done"))
    assert [("a-early", TxState.REQUESTED), ("b-late", TxState.SENT)] == [
        (r.pos_ref_id, r.state) for r in await txs.in_flight(LANE)
    ]


async def test_lane_without_transactions_has_none_in_flight(txs: TxStore) -> None:
    assert [] == await txs.in_flight(LANE)


async def test_in_flight_index_is_one_small_set(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    await txs.create_if_absent(LANE, _record("r1"))
    await txs.create_if_absent(LANE, _record("r2"))
    await txs.complete(LANE, "r1", result=TxResult.SUCCESS, outcome=_outcome("r1"))
    assert {b"r2"} == await redis.smembers(keys.txs_open(LANE))


# --- remembered command replies ----------------------------------------------------------------


async def test_remembered_reply_is_recalled(txs: TxStore) -> None:
    await txs.remember_command(LANE, "c-1", b'{"type":"command_accepted"}', now=T0)
    assert b'{"type":"command_accepted"}' == await txs.recall_command(LANE, "c-1", now=T0)


async def test_later_reply_replaces_the_earlier(txs: TxStore) -> None:
    await txs.remember_command(LANE, "c-1", b"accepted", now=T0)
    await txs.remember_command(LANE, "c-1", "completed", now=T0)
    assert b"completed" == await txs.recall_command(LANE, "c-1", now=T0)


async def test_unknown_command_has_no_reply(txs: TxStore) -> None:
    assert None is await txs.recall_command(LANE, "never", now=T0)


async def test_reply_is_forgotten_after_seven_days(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    await txs.remember_command(LANE, "old", b"1", now=T0)
    week_later = T0 + dt.timedelta(days=7, seconds=1)
    assert None is await txs.recall_command(LANE, "old", now=week_later)
    await txs.remember_command(LANE, "new", b"2", now=week_later)
    assert ([b"new"], b"2") == (
        await redis.hkeys(keys.command_replies(LANE)),
        await txs.recall_command(LANE, "new", now=week_later),
    )


async def test_command_ids_of_any_printable_text_are_remembered(txs: TxStore) -> None:
    command_id = "order {17} / till 3: ünïcode"
    await txs.remember_command(LANE, command_id, b"x", now=T0)
    assert b"x" == await txs.recall_command(LANE, command_id, now=T0)


# --- claim_command: the claim step of begin, alone --------------------------------------------


async def test_the_first_claim_of_a_command_id_wins_and_later_ones_learn_it(
    txs: TxStore,
) -> None:
    assert None is await txs.claim_command(LANE, "c-1", b"first", now=T0)
    assert b"first" == await txs.claim_command(LANE, "c-1", b"second", now=T0)
    assert b"first" == await txs.recall_command(LANE, "c-1", now=T0)  # nothing overwritten


async def test_a_claim_older_than_seven_days_is_claimed_afresh(txs: TxStore) -> None:
    await txs.claim_command(LANE, "c-1", b"old", now=T0)
    week_later = T0 + dt.timedelta(days=7, seconds=1)
    assert None is await txs.claim_command(LANE, "c-1", b"new", now=week_later)
    assert b"new" == await txs.recall_command(LANE, "c-1", now=week_later)


async def test_twenty_concurrent_claims_of_one_command_id_have_one_winner(
    redis_url: str, keys: Keys
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(20)]
    try:
        results = await asyncio.gather(
            *(
                TxStore(client, keys).claim_command(LANE, "c-race", f"claim-{i}", now=T0)
                for i, client in enumerate(clients)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    assert 1 == results.count(None)
    assert 1 == len({prior for prior in results if prior is not None})  # all saw the winner


async def test_a_claim_and_begin_share_one_claim(txs: TxStore, keys: Keys) -> None:
    assert None is await txs.claim_command(LANE, "cmd-order-17", b"control", now=T0)
    begun = await _begin(txs, keys, _record())
    assert (b"control", None) == (begun.prior_claim, await txs.get(LANE, "order-17"))


# --- begin: claim, record and accepting event in one step ------------------------------------


def _accepted(command_id: str = "cmd-order-17") -> dict[str, bytes]:
    return encode_event(
        CommandAccepted(instance_id=LANE, at=T0, command_id=command_id, command_type="purchase")
    )


async def _begin(txs: TxStore, keys: Keys, record: TxRecord, claim: bytes = b"claim-1") -> Begun:
    return await txs.begin(
        LANE,
        record,
        claim=claim,
        publish_to=keys.events(LANE),
        publish_fields=_accepted(record.command_id),
        maxlen=100,
        now=T0,
    )


async def test_begin_claims_records_and_publishes_in_one_step(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    begun = await _begin(txs, keys, _record())
    assert (None, _record(), True) == (begun.prior_claim, begun.record, begun.created)
    assert _record() == await txs.get(LANE, "order-17")
    assert [_record()] == await txs.in_flight(LANE)
    assert b"order-17" in await redis.zrange(keys.txs(LANE), 0, -1)
    assert b"claim-1" == await txs.recall_command(LANE, "cmd-order-17", now=T0)
    entries: Any = await redis.xrange(keys.events(LANE))
    assert ["command_accepted"] == [decode_event(f).type for _, f in entries]


async def test_begin_of_a_claimed_command_id_writes_nothing_and_returns_the_claim(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    await txs.remember_command(LANE, "cmd-order-17", b"earlier", now=T0)
    begun = await _begin(txs, keys, _record())
    assert (b"earlier", None, False) == (begun.prior_claim, begun.record, begun.created)
    assert None is await txs.get(LANE, "order-17")
    assert 0 == await redis.xlen(keys.events(LANE))
    assert b"earlier" == await txs.recall_command(LANE, "cmd-order-17", now=T0)


async def test_begin_forgets_a_claim_older_than_seven_days(txs: TxStore, keys: Keys) -> None:
    await txs.remember_command(LANE, "cmd-order-17", b"old", now=T0 - dt.timedelta(days=8))
    begun = await _begin(txs, keys, _record())
    assert (None, True) == (begun.prior_claim, begun.created)
    assert b"claim-1" == await txs.recall_command(LANE, "cmd-order-17", now=T0)


async def test_begin_of_a_used_pos_ref_id_returns_that_record_and_publishes_nothing(
    txs: TxStore, redis: aioredis.Redis, keys: Keys
) -> None:
    first = _record()
    await _begin(txs, keys, first)
    second = _record(command_id="cmd-other", amount_cents=999)
    begun = await _begin(txs, keys, second, claim=b"claim-2")
    assert (None, first, False) == (begun.prior_claim, begun.record, begun.created)
    assert b"claim-2" == await txs.recall_command(LANE, "cmd-other", now=T0)  # claimed
    assert 1 == await redis.xlen(keys.events(LANE))


async def test_begin_publishes_only_to_a_stream_of_the_same_lane(txs: TxStore, keys: Keys) -> None:
    other_lane = "0b9d5f7e-58d1-4c55-9a3b-0f0e4b7c2d11"
    with pytest.raises(InternalError):
        await txs.begin(
            LANE,
            _record(),
            claim=b"c",
            publish_to=keys.events(other_lane),
            publish_fields=_accepted(),
        )
    assert None is await txs.get(LANE, "order-17")


async def test_begin_fenced_out_writes_nothing(redis: aioredis.Redis, keys: Keys) -> None:
    await redis.set(keys.lease(LANE), "5:other-host", px=60_000)
    with pytest.raises(LeaseLost):
        await _begin(TxStore(redis, keys, fencing_token=4), keys, _record())
    assert None is await TxStore(redis, keys).get(LANE, "order-17")
    assert 0 == await redis.xlen(keys.events(LANE))


async def test_claim_fenced_out_writes_nothing(redis: aioredis.Redis, keys: Keys) -> None:
    await redis.set(keys.lease(LANE), "5:other-host", px=60_000)
    with pytest.raises(LeaseLost):
        await TxStore(redis, keys, fencing_token=4).claim_command(LANE, "c-1", b"x", now=T0)
    assert None is await TxStore(redis, keys).recall_command(LANE, "c-1", now=T0)


# --- the record itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"pos_ref_id": "a b"},
        {"command_id": ""},
        {"tx_type": "teleport"},
        {"amount_cents": -1},
        {"tip_cents": 1.5},
        {"state": TxState.COMPLETED},
        {"result": TxResult.SUCCESS},
    ],
)
def test_inconsistent_record_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(CommandError):
        _record(**changes)


def test_record_times_are_utc_milliseconds() -> None:
    sydney = dt.timezone(dt.timedelta(hours=11))
    record = _record(created_at=dt.datetime(2025, 1, 31, 20, 30, 0, 1999, tzinfo=sydney))
    assert (T0 + dt.timedelta(milliseconds=1), record.created_at) == (
        record.created_at,
        record.updated_at,
    )
