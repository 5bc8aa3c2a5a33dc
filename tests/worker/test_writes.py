"""The lane's one write script, its heartbeat, and its long command read, against real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import LocalProtocolError, RetryLater
from multipair.leases import LeaseLapsed, LeaseLost
from multipair.store.once import WriteTicket
from multipair.store.profiles import ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.store.transactions import TxRecord, TxState, TxStore
from multipair.worker.__main__ import LANE_SOCKET_TIMEOUT_S
from multipair.worker.lane import READ_BLOCK_MS, Lane, LaneDeps, read_block_ms
from multipair.worker.writes import LaneWriter, TxResultCode, WriteBatch


@pytest.fixture
def keys(key_prefix: str) -> bs.Keys:
    return bs.Keys(key_prefix)


@pytest.fixture
def iid() -> str:
    return str(uuid.uuid4())


def _record(pos_ref_id: str = "w-1") -> TxRecord:
    return TxRecord(
        pos_ref_id=pos_ref_id, command_id=f"c-{pos_ref_id}", tx_type="purchase", amount_cents=100
    )


def _event(iid: str, **fields: Any) -> dict[str, bytes]:
    return bs.encode_event(
        bs.Error(instance_id=iid, at=bs.parse_time("2025-01-31T09:30:00Z", "at"), **fields)
    )


async def _events(redis: aioredis.Redis, keys: bs.Keys, iid: str) -> list[bs.Event]:
    entries: Any = await redis.xrange(keys.events(iid))
    return [bs.decode_event(f) for _, f in entries]


# --- record ops in the lane's batch ------------------------------------------------------------


async def test_a_state_move_goes_with_the_other_writes_of_the_moment(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    txs = TxStore(redis, keys)
    await txs.create_if_absent(iid, _record())
    batch = WriteBatch()
    batch.hset(keys.state(iid), {"flow": "transaction"})
    slot = batch.tx(txs.move_op(iid, "w-1", TxState.SENT, request_message_id="prchs1"))
    batch.xadd(keys.events(iid), _event(iid, reason="r", detail="d"), maxlen=100)
    results = await LaneWriter(redis, keys, iid, None).apply(batch)
    record = await txs.get(iid, "w-1")
    assert record is not None
    assert (TxResultCode.DONE, TxState.SENT, "prchs1") == (
        results[slot],
        record.state,
        record.request_message_id,
    )
    assert b"transaction" == await redis.hget(keys.state(iid), "flow")
    assert 1 == len(await _events(redis, keys, iid))


async def test_a_refused_move_stops_the_batch_there_and_raises(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    txs = TxStore(redis, keys)
    await txs.create_if_absent(iid, _record())
    await txs.complete(iid, "w-1", result=bs.TxResult.SUCCESS, outcome=b"{}")
    batch = WriteBatch().hset(keys.state(iid), {"a": "1"})
    batch.tx(txs.move_op(iid, "w-1", TxState.SENT))
    batch.hset(keys.state(iid), {"b": "1"})
    with pytest.raises(LocalProtocolError, match="completed"):
        await LaneWriter(redis, keys, iid, None).apply(batch)
    assert {b"a": b"1"} == await redis.hgetall(keys.state(iid))  # nothing after the refusal

    missing = WriteBatch()
    missing.tx(txs.move_op(iid, "nope", TxState.SENT))
    with pytest.raises(LocalProtocolError, match="no such record"):
        await LaneWriter(redis, keys, iid, None).apply(missing)


async def test_outcome_event_and_acknowledgement_are_one_step_and_the_first_outcome_stands(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    txs = TxStore(redis, keys)
    writer = LaneWriter(redis, keys, iid, None)
    stream = keys.commands(iid)
    await redis.xgroup_create(stream, bs.CONSUMER_GROUP, id="0", mkstream=True)
    entry_id: Any = await redis.xadd(stream, {"v": "1", "body": "{}"})
    await redis.xreadgroup(bs.CONSUMER_GROUP, "me", {stream: ">"})
    await txs.create_if_absent(iid, _record())
    event = _event(iid, reason="outcome", detail="first")

    def outcome_batch(result: bs.TxResult) -> tuple[WriteBatch, int]:
        batch = WriteBatch()
        slot = batch.tx(
            txs.complete_op(
                iid,
                "w-1",
                result=result,
                outcome=orjson.dumps({"result": str(result)}),
                publish_to=keys.events(iid),
                publish_fields=event,
                maxlen=100,
            )
        )
        batch.xack(stream, entry_id.decode())
        return batch, slot

    batch, slot = outcome_batch(bs.TxResult.SUCCESS)
    assert TxResultCode.DONE == (await writer.apply(batch))[slot]
    pending: Any = await redis.xpending(stream, bs.CONSUMER_GROUP)
    assert 0 == pending["pending"]
    batch, slot = outcome_batch(bs.TxResult.FAILED)
    assert TxResultCode.ALREADY_COMPLETED == (await writer.apply(batch))[slot]
    record = await txs.get(iid, "w-1")
    assert record is not None
    assert (bs.TxResult.SUCCESS, 1) == (record.result, len(await _events(redis, keys, iid)))
    assert [] == await txs.in_flight(iid)


async def test_a_batch_fenced_out_writes_nothing(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    txs = TxStore(redis, keys, fencing_token=7)
    await redis.set(keys.lease(iid), "7:me", px=60_000)
    await txs.create_if_absent(iid, _record())
    await redis.set(keys.lease(iid), "8:other", px=60_000)
    batch = WriteBatch()
    batch.tx(txs.move_op(iid, "w-1", TxState.SENT))
    with pytest.raises(LeaseLost):
        await LaneWriter(redis, keys, iid, 7).apply(batch)
    record = await txs.get(iid, "w-1")
    assert record is not None
    assert TxState.REQUESTED == record.state


# --- heartbeat -----------------------------------------------------------------------------------


async def test_the_heartbeat_is_one_round_trip_that_notices_a_removed_profile(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    await redis.hset(keys.profile(iid), mapping={"pos_id": "POS1"})
    await redis.set(keys.lease(iid), "3:me", px=60_000)
    writer = LaneWriter(redis, keys, iid, 3)
    assert await writer.heartbeat("2025-01-31T09:30:00.000Z")
    assert b"2025-01-31T09:30:00.000Z" == await redis.hget(keys.state(iid), "heartbeat_at")

    await redis.delete(keys.profile(iid))
    assert not await writer.heartbeat("2025-01-31T09:30:02.000Z")
    assert b"2025-01-31T09:30:00.000Z" == await redis.hget(keys.state(iid), "heartbeat_at")

    # A removed lane also loses its lease: it is told "removed", not "lease lost".
    await redis.delete(keys.lease(iid))
    assert not await writer.heartbeat("2025-01-31T09:30:04.000Z")


async def test_a_heartbeat_fenced_out_writes_nothing(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    await redis.hset(keys.profile(iid), mapping={"pos_id": "POS1"})
    await redis.set(keys.lease(iid), "4:other", px=60_000)
    with pytest.raises(LeaseLost):
        await LaneWriter(redis, keys, iid, 3).heartbeat("2025-01-31T09:30:00.000Z")
    assert not await redis.exists(keys.state(iid))
    assert await LaneWriter(redis, keys, iid, None).heartbeat("2025-01-31T09:30:00.000Z")


# --- the long command read -----------------------------------------------------------------------


@pytest.fixture
async def reader_lane(
    redis: aioredis.Redis, redis_url: str, keys: bs.Keys, iid: str
) -> AsyncIterator[Lane]:
    """A lane object (not run) whose client has ONE connection, so reuse is certain."""
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=1, socket_timeout=LANE_SOCKET_TIMEOUT_S
    )
    client = aioredis.Redis(connection_pool=pool)
    settings = Settings(redis_url=redis_url, prefix=keys.prefix, host_id="test-host")
    lane = Lane(
        iid,
        LaneDeps(
            redis=client,
            keys=keys,
            profiles=ProfileStore(client, keys, MasterKey.generate()),
            txs=TxStore(client, keys),
            settings=settings,
        ),
    )
    await redis.xgroup_create(keys.commands(iid), bs.CONSUMER_GROUP, id="0", mkstream=True)
    yield lane
    await client.aclose()
    await pool.aclose()


async def test_a_drain_cuts_the_long_command_read_short(
    reader_lane: Lane, keys: bs.Keys, iid: str
) -> None:
    assert READ_BLOCK_MS == read_block_ms(reader_lane.redis)
    read = asyncio.create_task(
        reader_lane.intake.read_unless_draining(keys.commands(iid), READ_BLOCK_MS)
    )
    await asyncio.sleep(0.3)
    assert not read.done()  # blocked in Redis
    started = time.monotonic()
    reader_lane.drain()
    assert [] == await asyncio.wait_for(read, 5)
    assert time.monotonic() - started < 1.0
    assert b"still-fine" == await reader_lane.redis.echo("still-fine")


async def test_an_entry_delivered_to_a_cancelled_read_is_pending_and_the_connection_is_sound(
    reader_lane: Lane, redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    stream = keys.commands(iid)
    added: list[str] = []
    returned: list[str] = []
    for i in range(25):
        reader_lane._draining = asyncio.Event()
        read = asyncio.create_task(reader_lane.intake.read_unless_draining(stream, READ_BLOCK_MS))
        await asyncio.sleep(0.02)
        new_id: Any = await redis.xadd(stream, {"v": "1", "body": f"{i}"})
        added.append(new_id.decode())
        reader_lane.drain()  # races the reply to the blocked read
        returned.extend(entry_id for entry_id, _ in await read)
        # The one pooled connection is reused: it must carry this reply, not the read's.
        assert f"probe-{i}".encode() == await reader_lane.redis.echo(f"probe-{i}")
    pending: Any = await redis.xpending_range(stream, bs.CONSUMER_GROUP, "-", "+", 100)
    left = [p["message_id"].decode() for p in pending]
    assert sorted(added) == sorted(set(returned) | set(left))  # every entry read or pending


async def test_a_block_longer_than_the_socket_timeout_is_shortened_not_raised(
    redis_url: str, reader_lane: Lane, keys: bs.Keys, iid: str
) -> None:
    assert 3_000 == read_block_ms(aioredis.Redis.from_url(redis_url))  # redis-py's 5 s
    assert READ_BLOCK_MS == read_block_ms(aioredis.Redis.from_url(redis_url, socket_timeout=None))
    short = aioredis.Redis.from_url(redis_url, socket_timeout=1.0)
    try:
        block = read_block_ms(short)
        assert block < 1_000
        reader_lane.redis = short
        assert [] == await reader_lane.intake.read(keys.commands(iid), ">", block=block)
    finally:
        await short.aclose()


# --- applied once, however often sent (issue 13) -------------------------------------------------


class ReplyEater:
    """A TCP relay to Redis that, while ``eating``, forwards requests but closes the client's
    connection instead of forwarding the reply: Redis applied the write, the caller never
    learns it (the connection died in between), as in an outage."""

    def __init__(self, redis_url: str) -> None:
        host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        self.upstream = (host, int(port))
        self.eating = False
        self.eaten = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ReplyEater:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for coro in (self._up(reader, up_writer), self._down(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _up(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()

    async def _down(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            if self.eating:
                self.eaten += 1
                dst.close()  # the reply is lost with the connection
                return
            dst.write(data)
            await dst.drain()
        dst.close()


def _rich_batch(keys: bs.Keys, iid: str, txs: TxStore) -> tuple[WriteBatch, int]:
    batch = WriteBatch()
    batch.hincrby(keys.state(iid), "frames_rejected")
    batch.xadd(keys.events(iid), _event(iid, reason="r", detail="d"), maxlen=100)
    slot = batch.tx(
        txs.complete_op(
            iid,
            "w-1",
            result=bs.TxResult.SUCCESS,
            outcome=b"{}",
            publish_to=keys.events(iid),
            publish_fields=_event(iid, reason="done", detail=""),
        )
    )
    return batch, slot


async def test_a_batch_sent_again_after_its_reply_was_lost_is_applied_once(
    redis: aioredis.Redis, redis_url: str, keys: bs.Keys, iid: str
) -> None:
    txs = TxStore(redis, keys)
    await txs.create_if_absent(iid, _record())
    await redis.set(keys.lease(iid), "7:me", px=60_000)
    async with ReplyEater(redis_url) as eater:
        client = aioredis.Redis.from_url(eater.url)
        try:
            writer = LaneWriter(client, keys, iid, 7)
            batch, slot = _rich_batch(keys, iid, txs)
            # Connected, and the script loaded, before replies are eaten.
            await writer.apply(WriteBatch().hset(keys.state(iid), {"warm": "1"}))
            eater.eating = True
            with pytest.raises(aioredis.ConnectionError):
                await writer.apply(batch)
            eater.eating = False
            assert 1 == eater.eaten
            assert b"1" == await redis.hget(keys.state(iid), "frames_rejected")  # it did land

            results = await writer.apply(batch)  # the same batch: the same write id
        finally:
            await client.aclose()
    assert (TxResultCode.DONE, b"1") == (
        results[slot],
        await redis.hget(keys.state(iid), "frames_rejected"),
    )
    assert ["r", "done"] == [e.reason for e in await _events(redis, keys, iid)]  # type: ignore[attr-defined]
    # A new batch after that is a new write: applied, and the log forgets the settled ones.
    await LaneWriter(redis, keys, iid, 7).apply(WriteBatch().hincrby(keys.state(iid), "x"))
    assert await redis.hlen(keys.writes(iid)) <= 2


async def test_the_same_batch_applied_twice_returns_the_first_results_and_writes_nothing(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    txs = TxStore(redis, keys)
    await txs.create_if_absent(iid, _record())
    writer = LaneWriter(redis, keys, iid, None)
    batch, slot = _rich_batch(keys, iid, txs)
    first = await writer.apply(batch)
    assert first == await writer.apply(batch)
    assert TxResultCode.DONE == first[slot]  # not ALREADY_COMPLETED: it is the first reply
    assert (b"1", 2) == (
        await redis.hget(keys.state(iid), "frames_rejected"),
        len(await _events(redis, keys, iid)),
    )


async def test_begin_sent_again_after_its_reply_was_lost_publishes_one_command_accepted(
    redis: aioredis.Redis, redis_url: str, keys: bs.Keys, iid: str
) -> None:
    accepted = bs.encode_event(
        bs.CommandAccepted(
            instance_id=iid,
            at=bs.parse_time("2025-01-31T09:30:00Z", "at"),
            command_id="c-w-1",
            command_type="purchase",
        )
    )
    async with ReplyEater(redis_url) as eater:
        client = aioredis.Redis.from_url(eater.url)
        try:
            txs = TxStore(client, keys)
            writer = LaneWriter(client, keys, iid, None)

            async def begin(record: TxRecord, ticket: WriteTicket) -> Any:
                return await txs.begin(
                    iid,
                    record,
                    claim=b"entry-" + record.pos_ref_id.encode(),
                    publish_to=keys.events(iid),
                    publish_fields={**accepted, "body": accepted["body"]},
                    ticket=ticket,
                )

            # Connected, and the script loaded, before replies are eaten.
            await begin(_record("w-0"), writer.ticket())
            ticket = writer.ticket()
            eater.eating = True
            with pytest.raises(RetryLater):  # the stores' "Redis is unreachable"
                await begin(_record(), ticket)
            eater.eating = False
            assert 1 == eater.eaten
            assert await redis.exists(keys.tx(iid, "w-1"))  # it did land
            # Today's begin would see its own claim, create nothing, and the lane would
            # publish command_accepted a second time.
            begun = await begin(_record(), ticket)
        finally:
            await client.aclose()
    assert (None, True) == (begun.prior_claim, begun.created)
    assert 2 == len(await _events(redis, keys, iid))  # w-0's and w-1's command_accepted
    record = await TxStore(redis, keys).get(iid, "w-1")
    assert record is not None
    assert TxState.REQUESTED == record.state


async def test_a_write_refused_for_no_lease_at_all_says_lapsed_not_lost(
    redis: aioredis.Redis, keys: bs.Keys, iid: str
) -> None:
    """A lease that expired while Redis was away may be taken back: the lane is told which."""
    batch = WriteBatch().hset(keys.state(iid), {"status": "x"})
    with pytest.raises(LeaseLapsed):
        await LaneWriter(redis, keys, iid, 7).apply(batch)
    await redis.set(keys.lease(iid), "8:other", px=60_000)
    with pytest.raises(LeaseLost) as lost:
        await LaneWriter(redis, keys, iid, 7).apply(batch)
    assert not isinstance(lost.value, LeaseLapsed)
    await redis.set(keys.lease(iid), "7:me", px=60_000)  # taken back: the same batch lands
    assert [1] == await LaneWriter(redis, keys, iid, 7).apply(batch)
    assert b"x" == await redis.hget(keys.state(iid), "status")
