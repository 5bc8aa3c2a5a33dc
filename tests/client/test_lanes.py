"""Lanes, events, ops keys and the sync client through the public API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.client import AsyncClient, Client, ClientError, LaneNotFound
from multipair.redis_conn import as_text
from multipair.simulator import Simulator
from multipair.supervisor.control import default_requester
from tests.poll import poll_until
from tests.worker.helpers import SERIAL, LaneRig, all_keys

ADDRESS = "ws://127.0.0.1:8080"


async def test_add_list_get_and_lane_info(client: AsyncClient) -> None:
    first = await client.add_lane(pos_id="POS1", serial_number="S-1", device_address=ADDRESS)
    chosen = str(uuid.uuid4())
    second = await client.add_lane(
        pos_id="POS2",
        serial_number="S-2",
        auto_address=True,
        tenant_code="wbc",
        test_mode=True,
        instance_id=chosen.upper(),
    )
    assert chosen == second.instance_id
    # Oldest first; two lanes made in the same millisecond come by instance id.
    by_age = sorted([first, second], key=lambda p: (p.created_at, p.instance_id))
    assert by_age == await client.list_lanes()
    assert second == await client.get_lane(chosen)
    info = await client.lane_info(chosen)
    assert (second, None, None, None, 0, False, None) == (
        info.profile,
        info.status,
        info.host,
        info.lease_host,
        info.restarts,
        info.crash_loop,
        info.last_pos_ref_id,
    )
    assert [p.instance_id for p in by_age] == [i.instance_id for i in await client.lanes_info()]


async def test_add_lane_refuses_bad_fields_and_a_taken_id(client: AsyncClient) -> None:
    lane = await client.add_lane(pos_id="POS1", serial_number="S-1", device_address=ADDRESS)
    reasons = []
    for fields in (
        {"pos_id": "POS 1!", "serial_number": "S-1", "device_address": ADDRESS},
        {"pos_id": "POS1", "serial_number": "S-1"},  # no address, not auto
        {"pos_id": "POS1", "serial_number": "S-1", "device_address": ADDRESS, "instance_id": "x"},
        {
            "pos_id": "POS1",
            "serial_number": "S-1",
            "device_address": ADDRESS,
            "instance_id": lane.instance_id,
        },
    ):
        with pytest.raises(ClientError) as caught:
            await client.add_lane(**fields)  # type: ignore[arg-type]
        reasons.append(caught.value.reason)
    assert ["invalid_value", "invalid_value", "invalid_instance_id", "lane_exists"] == reasons


async def test_an_unknown_lane_is_lane_not_found_and_nothing_is_written(
    client: AsyncClient, redis: aioredis.Redis, key_prefix: str
) -> None:
    unknown = str(uuid.uuid4())
    calls = (
        client.get_lane(unknown),
        client.lane_info(unknown),
        client.purchase(unknown, 100),
        client.send(unknown, bs.TerminalStatus(command_id="c-1")),
        client.set_enabled(unknown, False),
        anext(client.events(unknown, since="0", follow=False)),
    )
    for call in calls:
        with pytest.raises(LaneNotFound) as caught:
            await call
        assert "unknown_lane" == caught.value.reason
    assert [] == await all_keys(redis, f"{key_prefix}:*")


async def test_set_enabled_is_remembered_in_the_profile(client: AsyncClient) -> None:
    lane = await client.add_lane(pos_id="POS1", serial_number="S-1", device_address=ADDRESS)
    await client.set_enabled(lane.instance_id, False)
    stopped = (await client.get_lane(lane.instance_id)).enabled
    await client.set_enabled(lane.instance_id, True)
    assert (False, True) == (stopped, (await client.get_lane(lane.instance_id)).enabled)


async def test_remove_lane_deletes_every_key_of_the_lane(
    client: AsyncClient, lane: LaneRig, redis: aioredis.Redis, key_prefix: str
) -> None:
    other = await client.add_lane(pos_id="POS2", serial_number="S-2", device_address=ADDRESS)
    await client.purchase(lane.instance_id, 1000, pos_ref_id="kept-1")
    await redis.xadd(lane.keys.commands(lane.instance_id), {"v": "1", "body": b"not json"})
    await lane.events.wait_for(lambda b: b["type"] == "command_rejected")
    await lane.process.kill()
    assert await redis.exists(lane.keys.tx(lane.instance_id, "kept-1"))
    assert await redis.exists(lane.keys.dead_letter(lane.instance_id))

    await client.remove_lane(lane.instance_id, unpair=False)

    left = sorted(as_text(k) for k in await all_keys(redis, f"{key_prefix}:*"))
    assert sorted([bs.Keys(key_prefix).lanes(), *_existing(other.instance_id, key_prefix)]) == left
    assert [other] == await client.list_lanes()
    with pytest.raises(LaneNotFound):
        await client.get_lane(lane.instance_id)


def _existing(instance_id: str, prefix: str) -> list[str]:
    """The keys a lane that never ran has: its profile and its command stream."""
    keys = bs.Keys(prefix)
    return [keys.profile(instance_id), keys.commands(instance_id)]


async def test_remove_lane_unpairs_a_running_lane_first(
    client: AsyncClient, lane: LaneRig, sim: Simulator
) -> None:
    terminal = sim.terminals[0].session
    assert terminal.state.secrets is not None
    await client.remove_lane(lane.instance_id)
    await poll_until(
        lambda: terminal.state.secrets is None, "drop_keys reached the terminal", 10, interval=0.02
    )
    assert [] == await client.list_lanes()


async def test_events_from_the_start_without_following(client: AsyncClient, lane: LaneRig) -> None:
    outcome = await client.purchase(lane.instance_id, 1000)
    listed = [e async for e in client.events(lane.instance_id, since="0", follow=False)]
    types = [e.type for _, e in listed]
    ids = [entry_id for entry_id, _ in listed]
    assert "lane_started" == types[0]
    assert ["command_accepted", "transaction_completed"] == [
        e.type
        for _, e in listed
        if e.command_id == outcome.command_id and e.type != "transaction_update"
    ]
    assert sorted(ids, key=_id) == ids
    two = [e.type async for _, e in client.events(lane.instance_id, since="0", count=2)]
    after = [e async for e in client.events(lane.instance_id, since=ids[-2], follow=False)]
    assert (types[:2], listed[-1]) == (two, after[0])


async def test_events_follow_new_events_only_by_default(client: AsyncClient, lane: LaneRig) -> None:
    old = [i async for i, _ in client.events(lane.instance_id, since="0", follow=False)]
    follow = client.events(lane.instance_id)
    first = asyncio.ensure_future(anext(follow))
    sent: list[str | None] = []
    # The follower starts at the newest entry when it first runs; keep asking
    # the terminal until an event newer than that reaches it.
    while not first.done():
        sent.append((await client.terminal_status(lane.instance_id)).command_id)
        await asyncio.wait({first}, timeout=1.0)
    entry_id, event = first.result()
    await follow.aclose()
    assert ("terminal_status", True) == (event.type, event.command_id in sent)
    assert _id(old[-1]) < _id(entry_id)


def _id(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-"))


async def test_send_control_and_ops_keys(
    client: AsyncClient, redis: aioredis.Redis, key_prefix: str
) -> None:
    lane = await client.add_lane(pos_id="POS1", serial_number="S-1", device_address=ADDRESS)
    keys = bs.Keys(key_prefix)
    await client.send_control("host-a", "restart", lane.instance_id)
    await client.send_control("host-a", "stop", lane.instance_id, requested_by="ana@ops-1")
    entries: Any = await redis.xrange(keys.host_control("host-a"))
    requester = default_requester()
    assert [
        {"action": "restart", "instance_id": lane.instance_id, "requested_by": requester},
        {"action": "stop", "instance_id": lane.instance_id, "requested_by": "ana@ops-1"},
    ] == [orjson.loads(fields[b"body"]) for _, fields in entries]
    assert "@" in requester
    assert [b"1", b"1"] == [fields[b"v"] for _, fields in entries]
    with pytest.raises(ClientError):
        await client.send_control("host-a", "explode", lane.instance_id)

    assert None is await client.lane_owner(lane.instance_id)
    await redis.set(keys.lease(lane.instance_id), "7:host-a")
    assert "host-a" == await client.lane_owner(lane.instance_id)
    assert "host-a" == (await client.lane_info(lane.instance_id)).lease_host

    await redis.hset(
        keys.hosts(),
        mapping={"host-b": orjson.dumps({"pid": 12, "lanes": 3}), "host-a": "garbage"},
    )
    assert [
        {"host_id": "host-a", "raw": "garbage"},
        {"host_id": "host-b", "pid": 12, "lanes": 3},
    ] == await client.hosts()


async def test_the_sync_client_runs_a_purchase(
    redis_url: str, key_prefix: str, lane: LaneRig
) -> None:
    # The simulator runs on this test's loop, so the blocking client runs on a thread.
    def pos_backend() -> tuple[str, int, list[str], str]:
        progress: list[str] = []
        with Client(redis_url, prefix=key_prefix) as mp:
            outcome = mp.purchase(
                lane.instance_id, 1250, on_event=lambda e: progress.append(e.type)
            )
            events = mp.events(lane.instance_id, since="0", follow=False)
            done = [e for _, e in events if e.type == "transaction_completed"]
            serial = mp.get_lane(lane.instance_id).serial_number
        return outcome.result, outcome.amount_cents or 0, progress[:1], f"{len(done)}/{serial}"

    assert ("success", 1250, ["command_accepted"], f"1/{SERIAL}") == (
        await asyncio.to_thread(pos_backend)
    )


async def test_the_sync_client_raises_the_same_errors(redis_url: str, key_prefix: str) -> None:
    def call() -> str:
        with Client(redis_url, prefix=key_prefix) as mp, pytest.raises(LaneNotFound) as caught:
            mp.get_lane(str(uuid.uuid4()))
        return caught.value.reason

    assert "unknown_lane" == await asyncio.to_thread(call)
