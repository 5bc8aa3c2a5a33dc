"""No entry takes a lane out: poison entries, repeats, contained bugs, entries that kill.

Each test writes its entries with a raw client, exactly as a careless or
hostile writer could, and checks that the lane refuses the entry
(``command_rejected``), copies it to the dead-letter stream, acknowledges
it, and still runs a valid purchase queued behind it.
"""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import CommandError, RetryLater
from multipair.redis_conn import RAW_REPLY, allow_raw_replies
from multipair.simulator import Simulator
from multipair.store.profiles import ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.store.transactions import TxStore
from multipair.worker.admission import POISON_DELIVERIES
from multipair.worker.entries import dead_letter, stream_entries
from multipair.worker.lane import Lane, LaneDeps, lane_must_end
from tests.simulator.helpers import Control
from tests.worker.helpers import SERIAL, LaneRig

Pairs = list[tuple[bytes, bytes]]


async def xadd_raw(rig: LaneRig, *fields: bytes | str) -> str:
    """``XADD commands * <fields>`` as given: repeats, any bytes (redis-py's xadd takes a dict)."""
    entry_id = await rig.redis.execute_command(  # type: ignore[no-untyped-call]
        "XADD", rig.keys.commands(rig.instance_id), "*", *fields
    )
    return str(entry_id.decode())


async def dead_letters(rig: LaneRig) -> dict[str, Pairs]:
    """The dead-letter stream by refused entry id, each entry's fields as stored (pairs)."""
    allow_raw_replies(rig.redis, "XRANGE")
    reply: Any = await rig.redis.execute_command(  # type: ignore[no-untyped-call]
        "XRANGE", rig.keys.dead_letter(rig.instance_id), "-", "+", **{RAW_REPLY: True}
    )
    found: dict[str, Pairs] = {}
    for _, flat in reply:
        pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        found[dict(pairs)[b"entry_id"].decode()] = pairs
    return found


async def rejection(rig: LaneRig, entry_id: str) -> dict[str, Any]:
    return await rig.events.wait_for(
        lambda b: b["type"] == "command_rejected" and b.get("entry_id") == entry_id
    )


async def still_serves(rig: LaneRig, pos_ref_id: str, *, starts: int = 1) -> None:
    """A purchase behind the poison completes; every entry is acknowledged; no restart."""
    done = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": pos_ref_id, "amount_cents": 1000}), 30
    )
    assert ("transaction_completed", "success") == (done["type"], done["result"])
    await rig.wait_acknowledged()
    assert starts == len(rig.events.of_type("lane_started"))
    assert rig.process.proc is not None
    assert rig.process.proc.returncode is None


# --- poison entries --------------------------------------------------------------------------


async def test_a_field_name_that_is_not_utf8_is_refused_dead_lettered_and_acknowledged(
    lane: LaneRig,
) -> None:
    """``XADD ... * v 1 body '{}' $'\\xff' 1``: building its dead letter used to crash the lane."""
    entry_id = await xadd_raw(lane, "v", "1", "body", "{}", b"\xff", "1")
    assert "bad_entry" == (await rejection(lane, entry_id))["reason"]
    await still_serves(lane, "after-ff")
    stored = (await dead_letters(lane))[entry_id]
    assert [(b"v", b"1"), (b"body", b"{}"), (b"\xff", b"1")] == stored[:3]  # bytes kept
    assert (b"reason", b"bad_entry") in stored


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"], ids=["last", "first"]
)
async def test_an_expiry_at_the_edge_of_the_calendar_is_an_invalid_value(
    lane: LaneRig, when: str
) -> None:
    body = {"type": "purchase", "command_id": "edge", "pos_ref_id": "edge", "amount_cents": 1}
    entry_id = await xadd_raw(lane, "v", "1", "body", orjson.dumps({**body, "expires_at": when}))
    refused = await rejection(lane, entry_id)
    assert ("invalid_value", "edge") == (refused["reason"], refused["command_id"])
    await still_serves(lane, "after-edge")
    assert entry_id in await dead_letters(lane)


PURCHASE = orjson.dumps(
    {"type": "purchase", "command_id": "twice", "pos_ref_id": "twice", "amount_cents": 500}
)
CANCEL = orjson.dumps({"type": "cancel", "command_id": "twice-cancel"})


@pytest.mark.parametrize(
    "fields",
    [
        (b"v", b"2", b"body", PURCHASE, b"v", b"1"),
        (b"v", b"1", b"body", CANCEL, b"body", PURCHASE),
        (b"v", b"1", b"body", PURCHASE, b"trace", b"x"),
    ],
    ids=["v-twice", "body-twice", "third-field"],
)
async def test_an_entry_that_is_not_exactly_one_v_and_one_body_is_refused(
    lane: LaneRig, fields: tuple[bytes, ...]
) -> None:
    """redis-py would read ``v 2 ... v 1`` as ``v 1`` (last wins): the lane reads raw pairs."""
    entry_id = await xadd_raw(lane, *fields)
    assert "bad_entry" == (await rejection(lane, entry_id))["reason"]
    await still_serves(lane, "after-twice")
    assert [] == lane.events.of_type("transaction_completed", pos_ref_id="twice")
    assert [] == lane.events.of_type("command_accepted", command_id="twice")
    stored = (await dead_letters(lane))[entry_id]
    assert list(fields) == [item for pair in stored[:3] for item in pair]  # as received


async def test_a_body_with_a_repeated_key_is_refused_not_charged(lane: LaneRig) -> None:
    body = (
        b'{"type":"purchase","command_id":"dup","pos_ref_id":"dup",'
        b'"amount_cents":26682,"amount_cents":7083}'
    )
    entry_id = await xadd_raw(lane, "v", "1", "body", body)
    refused = await rejection(lane, entry_id)
    assert ("duplicate_key", "dup") == (refused["reason"], refused["command_id"])
    await still_serves(lane, "after-dup")
    assert [] == lane.events.of_type("transaction_completed", pos_ref_id="dup")
    assert entry_id in await dead_letters(lane)


async def test_null_optional_fields_of_a_purchase_mean_their_defaults(lane: LaneRig) -> None:
    command_id = await lane.send(
        {
            "type": "purchase",
            "pos_ref_id": "nulls",
            "amount_cents": 1250,
            "tip_cents": None,
            "surcharge_cents": None,
            "cashout_cents": None,
            "prompt_for_cashout": None,
            "expires_at": None,
        }
    )
    done = await lane.answer(command_id, 30)
    assert ("transaction_completed", "success", 1250, 0, 0) == (
        done["type"],
        done["result"],
        done["amount_cents"],
        done["tip_cents"],
        done["surcharge_cents"],
    )


# --- command_id claims ------------------------------------------------------------------------


async def test_a_control_command_reusing_a_command_id_is_refused(lane: LaneRig) -> None:
    """Every command claims its command_id: a cancel must not answer under a purchase's id."""
    paid = await lane.answer(
        await lane.send(
            {"type": "purchase", "command_id": "pay-1", "pos_ref_id": "pay-1", "amount_cents": 1}
        ),
        30,
    )
    assert "success" == paid["result"]
    mark = lane.events.mark()
    for kind in ("cancel", "terminal_status", "signature_accept"):
        await lane.send({"type": kind, "command_id": "pay-1"})
    status_id = await lane.send({"type": "terminal_status", "command_id": "status-1"})
    await lane.send({"type": "pair_cancel", "command_id": "status-1"})  # a control's id, reused
    await lane.answer(status_id)
    await lane.wait_acknowledged()
    answers = [
        (b["type"], b.get("command_type"), b.get("reason"))
        for b in lane.events.seen[mark:]
        if b["type"] in ("command_rejected", "command_accepted", "terminal_status")
    ]
    assert [
        ("command_rejected", "cancel", "duplicate_command_id"),
        ("command_rejected", "terminal_status", "duplicate_command_id"),
        ("command_rejected", "signature_accept", "duplicate_command_id"),
        ("terminal_status", None, None),
        ("command_rejected", "pair_cancel", "duplicate_command_id"),
    ] == answers
    await still_serves(lane, "after-claims")


# --- the last line of defence ----------------------------------------------------------------


async def test_an_unexpected_error_on_one_entry_is_contained(rig: LaneRig) -> None:
    """A bug met by one entry: refused (internal_error), dead-lettered, acknowledged; go on."""
    await rig.process.start(failpoints="lane.control_command_fails")
    await rig.wait_state(status="paired_connected")
    command_id = await rig.send({"type": "terminal_status"})
    refused = await rig.answer(command_id)
    detail = (
        "handling this entry failed on our side: "
        "multipair.failpoints.InjectedFault: failpoint lane.control_command_fails"
    )
    assert ("command_rejected", "internal_error", detail, "terminal_status") == (
        refused["type"],
        refused["reason"],
        refused["detail"],
        refused["command_type"],
    )
    await still_serves(rig, "after-bug")  # the fault point is still armed
    stored = dict((await dead_letters(rig))[refused["entry_id"]])
    assert (b"internal_error", detail.encode()) == (stored[b"reason"], stored[b"detail"])
    assert "handling a command entry failed" in rig.process.logs()


async def test_an_entry_that_kills_the_lane_is_given_up_after_three_deliveries(
    rig: LaneRig,
) -> None:
    """The entry kills every lane that takes it: the fourth start refuses it and goes on."""
    await rig.process.start(failpoints="lane.control_command")
    await rig.wait_state(status="paired_connected")
    command_id = await rig.send({"type": "terminal_status"})
    for _ in range(POISON_DELIVERIES):
        assert -signal.SIGKILL == await rig.process.wait_exit()  # died taking it
        await rig.process.start(failpoints="lane.control_command")
    refused = await rig.answer(command_id, 30)
    assert ("command_rejected", "poison_entry") == (refused["type"], refused["reason"])
    assert f"the lane took this entry {POISON_DELIVERIES} times" in refused["detail"]
    await rig.wait_state(status="paired_connected")
    await still_serves(rig, "after-poison", starts=POISON_DELIVERIES + 1)
    stored = dict((await dead_letters(rig))[refused["entry_id"]])
    assert b"poison_entry" == stored[b"reason"]


async def test_an_in_flight_transaction_is_recovered_however_often_it_was_delivered(
    rig: LaneRig, sim: Simulator
) -> None:
    """Never given up on: its record exists, so it is resumed, and charged once."""
    await rig.process.start(failpoints="lane.before_send")
    await rig.wait_state(status="paired_connected")
    command_id = await rig.send({"type": "purchase", "pos_ref_id": "fly-1", "amount_cents": 700})
    for _ in range(POISON_DELIVERIES - 1):
        assert -signal.SIGKILL == await rig.process.wait_exit()  # recorded, never sent
        await rig.process.start(failpoints="lane.before_send")
    assert -signal.SIGKILL == await rig.process.wait_exit()
    pending: Any = await rig.redis.xpending_range(
        rig.keys.commands(rig.instance_id), bs.CONSUMER_GROUP, "-", "+", 10
    )
    assert [POISON_DELIVERIES] == [p["times_delivered"] for p in pending]
    await rig.process.start()
    done = await rig.answer(command_id, 30)
    assert ("transaction_completed", "success") == (done["type"], done["result"])
    await rig.wait_acknowledged()
    assert [] == rig.events.of_type("command_rejected")
    async with aiohttp.ClientSession() as http:
        counts = await Control(http, sim.control_url).get(SERIAL)
    assert 1 == counts["purchase_requests"]["fly-1"]


# --- pieces, without a lane process ------------------------------------------------------------


def test_a_dead_letter_copy_never_fails() -> None:
    refused = CommandError("bad_entry", "détail")
    odd: list[Any] = [
        [(b"\xff", b"\x00\xfe"), ("v", "\ud800"), (3, None)],
        {b"v": b"1", "body": "x"},
        [(b"only-a-name",)],
        "not pairs",
        None,
    ]
    for fields in odd:
        copy = dead_letter(fields, "1-0", refused)
        assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in copy)
        assert [
            (b"entry_id", b"1-0"),
            (b"reason", b"bad_entry"),
            (b"detail", "détail".encode()),
        ] == copy[-3:]
    assert (b"\xff", b"\x00\xfe") == dead_letter(odd[0], "1-0", refused)[0]


def test_raw_replies_of_both_protocols_give_the_same_entries() -> None:
    entries = [[b"1-0", [b"v", b"1", b"body", b"A", b"body", b"B"]], [b"2-0", None]]
    expected = [("1-0", [(b"v", b"1"), (b"body", b"A"), (b"body", b"B")]), ("2-0", [])]
    assert expected == stream_entries([[b"s", entries]])  # RESP2
    assert expected == stream_entries({b"s": entries})  # RESP3
    assert [] == stream_entries(None)


async def test_only_errors_that_are_the_entrys_own_are_contained(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    keys = bs.Keys("t")
    lane = Lane(
        "8a5e2dcc-bfa0-469f-95d7-eec778b08453",
        LaneDeps(
            redis=client,
            keys=keys,
            profiles=ProfileStore(client, keys, MasterKey.generate()),
            txs=TxStore(client, keys),
            settings=Settings(redis_url=redis_url, prefix="t", host_id="test-host"),
        ),
    )
    try:
        with pytest.raises(AssertionError) as escaped:
            await lane._flush()  # no session yet: fails inside the flush
        assert lane_must_end(escaped.value)  # the session may be out of step: end the lane
        assert lane_must_end(RetryLater("Redis is unreachable"))
        assert not lane_must_end(KeyError("x"))
        assert not lane_must_end(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"))
    finally:
        await client.aclose()
