"""A lane with ``MULTIPAIR_REDIS_MIN_REPLICAS=1``: the writes money rests on are on the replica.

A real primary and replica (``--replicaof``), a real lane process and the
simulator. Pausing the replica (SIGSTOP) makes every ``WAIT`` time out, as
a lagging or cut-off replica would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.poll import poll_until
from tests.replication.servers import ReplicatedPair
from tests.simulator.helpers import KEYS
from tests.worker.helpers import LaneRig, make_rig

DURABLE = {"MULTIPAIR_REDIS_MIN_REPLICAS": "1", "MULTIPAIR_REDIS_WAIT_MS": "200"}


async def _lane(
    primary: aioredis.Redis,
    pair: ReplicatedPair,
    key_prefix: str,
    tmp_path: Path,
    sim: Simulator,
    env: dict[str, str],
) -> LaneRig:
    rig = await make_rig(
        primary,
        pair.url,
        key_prefix,
        tmp_path,
        address=sim.terminals[0].ws_url,
        secrets=KEYS,
        env=env,
    )
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    return rig


@pytest.fixture
async def lane(
    primary: aioredis.Redis, pair: ReplicatedPair, key_prefix: str, tmp_path: Path, sim: Simulator
) -> AsyncIterator[LaneRig]:
    """A paired lane that waits for one replica."""
    rig = await _lane(primary, pair, key_prefix, tmp_path, sim, DURABLE)
    yield rig
    pair.resume_replica()
    await rig.process.kill()


async def _record(client: aioredis.Redis, lane: LaneRig, ref: str) -> dict[str, str]:
    raw: Any = await client.hgetall(lane.keys.tx(lane.instance_id, ref))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_purchase_completes_and_its_writes_are_on_the_replica(
    lane: LaneRig, replica: aioredis.Redis, sim: Simulator
) -> None:
    """The lane moves on only once the outcome is confirmed, and sends only once the record is:
    by the time the next purchase is answered, the first outcome and the next record (``sent``
    before its request left) are on the replica, whatever replication lag there is."""
    first = await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "d-1", "amount_cents": 1250})
    )
    assert ("transaction_completed", "success") == (first["type"], first["result"])
    await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "d-1b", "amount_cents": 1250})
    )
    on_replica = await _record(replica, lane, "d-1")
    assert ("completed", "success") == (on_replica.get("state"), on_replica.get("result"))
    assert (await _record(replica, lane, "d-1b")).get("state") in ("sent", "completed")
    assert 1 == sim.terminals[0].stats.purchase_requests["d-1"]


async def test_a_request_whose_record_is_not_confirmed_is_not_sent_and_a_retry_runs_it_once(
    lane: LaneRig, pair: ReplicatedPair, sim: Simulator
) -> None:
    body = {"type": "purchase", "pos_ref_id": "d-2", "amount_cents": 1250, "command_id": "c-d2"}
    with pair.paused():
        started = time.monotonic()
        await lane.send(dict(body))
        refused = await lane.answer("c-d2", timeout=30)
        waited = time.monotonic() - started
        assert ("command_rejected", "redis_unavailable") == (refused["type"], refused["reason"])
        assert waited >= 4.0, waited  # it asked the replica again for a while first
        # command_accepted OR command_rejected: nothing was accepted before the refusal.
        assert [] == [
            b
            for b in lane.events.seen
            if b.get("command_id") == "c-d2" and b["type"] == "command_accepted"
        ]
        assert 0 == sim.terminals[0].stats.transaction_requests["d-2"]  # never sent
        record = await lane.txs.get(lane.instance_id, "d-2")
        assert record is not None
        assert "requested" == str(record.state)
    mark = lane.events.mark()
    await lane.send(dict(body))  # the same command again, replica back
    done = await lane.events.wait_for(
        lambda b: b.get("command_id") == "c-d2" and b["type"] == "transaction_completed",
        after=mark,
    )
    assert "success" == done["result"]
    assert 1 == sim.terminals[0].stats.purchase_requests["d-2"]
    assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id="d-2"))
    answers = [b["type"] for b in lane.events.seen if b.get("command_id") == "c-d2"]
    # The retry: accepted once, after its record was confirmed, then completed.
    assert ["command_rejected", "command_accepted", "transaction_completed"] == answers


async def test_an_outcome_not_confirmed_is_kept_and_written_again_until_it_is(
    lane: LaneRig,
    pair: ReplicatedPair,
    primary: aioredis.Redis,
    replica: aioredis.Redis,
    sim: Simulator,
) -> None:
    """The outcome lands on the primary only; a "failover" then loses it; the lane writes it
    again (same write id, fresh), and once the replica is back it is confirmed there."""
    iid, keys = lane.instance_id, lane.keys
    # 54 cents: a slow card, approved after about 3 s.
    command_id = await lane.send({"type": "purchase", "pos_ref_id": "d-3", "amount_cents": 1254})
    # At the terminal (the `sent` move confirmed first): only the outcome is left to write.
    await poll_until(lambda: sim.terminals[0].stats.purchase_requests["d-3"] == 1)
    with pair.paused():

        async def completed_on_primary() -> bool:
            return (await _record(primary, lane, "d-3")).get("state") == "completed"

        await poll_until(completed_on_primary, timeout=20)
        await poll_until(lambda: "not confirmed on the replicas" in lane.process.logs())
        # What a failover to a replica without the outcome would leave: the record
        # still `sent`, no outcome event, no write id of it.
        entries: Any = await primary.xrange(keys.events(iid))
        completed: list[bytes] = [
            entry_id
            for entry_id, fields in entries
            if b'"transaction_completed"' in fields[b"body"]
        ]
        async with primary.pipeline(transaction=True) as tx:
            tx.delete(keys.writes(iid))
            tx.hdel(keys.tx(iid, "d-3"), "result", "outcome")
            tx.hset(keys.tx(iid, "d-3"), "state", "sent")
            tx.persist(keys.tx(iid, "d-3"))
            tx.sadd(keys.txs_open(iid), "d-3")
            tx.xdel(keys.events(iid), *completed)
            await tx.execute()
        await poll_until(completed_on_primary, timeout=20)  # written again, from memory
        await asyncio.sleep(0.5)
    await poll_until(lambda: "the write is confirmed on the replicas" in lane.process.logs())
    on_replica = await _record(replica, lane, "d-3")
    assert ("completed", "success") == (on_replica.get("state"), on_replica.get("result"))
    done = await lane.answer(command_id)
    assert "success" == done["result"]
    assert 1 == len([b for b in lane.events.seen if b["type"] == "transaction_completed"]), (
        "the outcome is published once on the primary that stands"
    )
    await lane.wait_acknowledged()


async def test_without_min_replicas_no_wait_is_sent(
    primary: aioredis.Redis, pair: ReplicatedPair, key_prefix: str, tmp_path: Path, sim: Simulator
) -> None:
    await primary.config_resetstat()
    rig = await _lane(primary, pair, key_prefix, tmp_path, sim, {})
    try:
        done = await rig.answer(
            await rig.send({"type": "purchase", "pos_ref_id": "z-1", "amount_cents": 1250})
        )
        assert "success" == done["result"]
    finally:
        await rig.process.kill()
    stats: Any = await primary.info("commandstats")
    assert "cmdstat_wait" not in stats
    assert "cmdstat_waitaof" not in stats


async def test_with_min_replicas_the_writes_are_waited_for(
    lane: LaneRig, primary: aioredis.Redis
) -> None:
    await primary.config_resetstat()
    done = await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "w-1", "amount_cents": 1250})
    )
    assert "success" == done["result"]

    async def three_waits() -> bool:
        stats: Any = await primary.info("commandstats")
        return int(stats.get("cmdstat_wait", {}).get("calls", 0)) >= 3

    # Before send (the record), the `sent` move and the outcome (whose WAIT may still
    # be running when its event is read): three at least.
    await poll_until(three_waits, "three WAITs")
