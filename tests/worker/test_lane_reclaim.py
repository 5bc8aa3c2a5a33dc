"""A lane takes back its own pending entries that no read returned (issue 13), in-process.

A read of new commands whose reply is lost (Redis went away during it) leaves
its entries pending: delivered to the lane's consumer, never seen by it.
The lane must run them without a restart, and never run twice an entry it
already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.simulator import Simulator
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.store.transactions import TxStore
from multipair.worker.lane import Lane, LaneDeps
from tests.poll import poll_until
from tests.simulator.helpers import KEYS
from tests.worker.helpers import WAIT, EventReader

APPROVE = 1000


@pytest.fixture
async def lane(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, sim: Simulator
) -> AsyncIterator[Lane]:
    """A lane run in this process: pending entries idle 1 s are looked for every 0.3 s."""
    keys = bs.Keys(key_prefix)
    master = MasterKey.generate()
    client = aioredis.Redis.from_url(redis_url)
    profiles = ProfileStore(client, keys, master)
    profile = await profiles.create(
        LaneProfile(
            pos_id="POS1",
            serial_number=sim.terminals[0].serial,
            device_address=sim.terminals[0].ws_url,
        )
    )
    await profiles.save_secrets(profile.instance_id, KEYS)
    lane = Lane(
        profile.instance_id,
        LaneDeps(
            redis=client,
            keys=keys,
            profiles=profiles,
            txs=TxStore(client, keys),
            settings=Settings(redis_url=redis_url, prefix=key_prefix, host_id="test-host"),
            reclaim_every_s=0.3,
            reclaim_idle_ms=1_000,
        ),
    )
    task = asyncio.create_task(lane.run())
    try:
        yield lane
    finally:
        lane.stop_now()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await client.aclose()


def _command(command_id: str, ref: str) -> dict[FieldT, EncodableT]:
    body = {
        "command_id": command_id,
        "type": "purchase",
        "pos_ref_id": ref,
        "amount_cents": APPROVE,
    }
    return {"v": b"1", "body": orjson.dumps(body)}


async def _connected(redis: aioredis.Redis, lane: Lane) -> None:
    async def connected() -> bool:
        status = await redis.hget(lane.keys.state(lane.instance_id), "status")
        return status == b"paired_connected"

    await poll_until(connected, "the lane connected", WAIT)


async def test_an_entry_a_lost_read_left_pending_is_taken_back_and_answered_once(
    lane: Lane, redis: aioredis.Redis, sim: Simulator
) -> None:
    await _connected(redis, lane)
    stream = lane.keys.commands(lane.instance_id)
    events = EventReader(redis, lane.keys.events(lane.instance_id))
    consumer = lane.consumer

    # A long purchase (the card takes 3 s): its entry stays pending and idle past the 1 s
    # threshold while the lane runs it. Taking it back must not run it a second time.
    sim.terminals[0].settings.card_delay = 3.0
    await redis.xadd(stream, _command("c-long", "r-long"))
    await asyncio.sleep(0.5)
    sim.terminals[0].settings.card_delay = 0.0
    done = await events.wait_for(
        lambda b: b["type"] == "transaction_completed" and b["command_id"] == "c-long"
    )
    assert "success" == done["result"]

    # An entry delivered to the lane's consumer by a read whose reply never reached the
    # lane: added and read in one transaction, so the lane's own blocked read never sees it.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(stream, _command("c-lost", "r-lost"))
        pipe.xreadgroup(bs.CONSUMER_GROUP, consumer, {stream: ">"}, count=1)
        added, read = await pipe.execute()
    assert [added] == [entry_id for entry_id, _ in read[0][1]]
    pending: Any = await redis.xpending(stream, bs.CONSUMER_GROUP)
    assert 1 == pending["pending"]

    done = await events.wait_for(
        lambda b: b["type"] == "transaction_completed" and b["command_id"] == "c-lost"
    )
    assert "success" == done["result"]
    await asyncio.sleep(1.5)  # several more looks for pending entries
    await events.poll(0)
    completed = [b["command_id"] for b in events.of_type("transaction_completed")]
    accepted = [b["command_id"] for b in events.of_type("command_accepted")]
    assert (["c-long", "c-lost"], ["c-long", "c-lost"]) == (completed, accepted)
    assert {"r-long": 1, "r-lost": 1} == dict(sim.terminals[0].stats.purchase_requests)
    pending = await redis.xpending(stream, bs.CONSUMER_GROUP)
    assert 0 == pending["pending"]
