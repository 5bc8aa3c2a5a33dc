"""What holds on a Redis Cluster beyond the re-run suites: any node, no cross-slot operation.

The cluster is real (three masters on loopback, tests/cluster/conftest.py);
so are the lane and supervisor processes below.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisClusterException

from multipair import broker_schema as bs
from multipair.client import AsyncClient
from multipair.config import Settings
from multipair.embedded import RedisCluster, RedisServer
from multipair.exceptions import InternalError
from multipair.leases import LeaseManager
from multipair.redis_conn import connect, connect_blocking, is_cluster
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.store.transactions import TxRecord, TxStore
from multipair.worker.writes import LaneWriter, WriteBatch
from tests.simulator.helpers import KEYS, paired_simulator
from tests.supervisor.helpers import Fleet, Lane
from tests.worker.helpers import EventReader, all_keys, make_rig


def _port(url: str) -> int | None:
    return urlsplit(url).port


def _lane_ids_on_every_master(client: aioredis.Redis, keys: bs.Keys) -> list[str]:
    """One new lane id per master: each lane's keys live on a different node."""
    cluster = cast(aioredis.RedisCluster, client)  # connect() types a cluster client as Redis
    wanted = {node.port for node in cluster.get_primaries()}
    found: dict[int | str, str] = {}
    while set(found) != wanted:
        iid = str(uuid.uuid4())
        node = cluster.get_node_from_key(keys.profile(iid))
        assert node is not None, "every slot has a master"
        found.setdefault(node.port, iid)
    return [found[port] for port in sorted(found)]


async def test_three_masters_serve_every_slot(redis_cluster: RedisCluster) -> None:
    client = await connect(redis_cluster.urls[2])
    try:
        assert is_cluster(client)
        slots: Any = await cast(aioredis.RedisCluster, client).cluster_slots()
    finally:
        await client.aclose()
    owners = {tuple(served["primary"]) for served in slots.values()}
    covered = sum(end - start + 1 for start, end in slots)
    assert (3, 16384) == (len(owners), covered)
    assert {("127.0.0.1", port) for port in redis_cluster.ports} == owners


async def test_connect_from_any_node_finds_the_cluster_and_a_single_server_stays_plain(
    redis_cluster: RedisCluster, redis_server: RedisServer
) -> None:
    clients = [await connect(url) for url in redis_cluster.urls]
    blocking = connect_blocking(redis_cluster.urls[1])
    single = await connect(redis_server.url)
    try:
        assert [True, True, True, True, False] == [
            is_cluster(c) for c in (*clients, blocking, single)
        ]
        keys = [f"mp:lane:{{{uuid.uuid4()}}}:probe" for _ in range(30)]
        for index, key in enumerate(keys):  # written through every node in turn ...
            await clients[index % 3].set(key, str(index))
        for client in (*clients, blocking):  # ... and read back through each
            assert [str(i).encode() for i in range(30)] == [await client.get(k) for k in keys]
        assert isinstance(single, aioredis.Redis)
    finally:
        for client in (*clients, blocking, single):
            await client.aclose()


async def test_connect_to_a_port_nobody_listens_on_is_a_connection_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    with pytest.raises(RedisConnectionError):
        await connect(url)
    with pytest.raises(RedisConnectionError):
        connect_blocking(url)


async def test_a_lane_key_asked_of_a_node_that_does_not_own_it_is_moved(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """make_rig picks lane ids away from ``redis_url``'s node: lanes must follow MOVED."""
    rig = await make_rig(redis, redis_url, key_prefix, tmp_path, address="ws://127.0.0.1:9")
    assert is_cluster(redis)
    owner = cast(aioredis.RedisCluster, redis).get_node_from_key(rig.keys.profile(rig.instance_id))
    assert owner is not None
    assert owner.port != _port(redis_url)
    plain = aioredis.Redis.from_url(redis_url)  # no redirection: sees the MOVED reply
    try:
        with pytest.raises(MovedError) as moved:
            await plain.hgetall(rig.keys.profile(rig.instance_id))
        assert ("127.0.0.1", owner.port) == moved.value.node_addr
    finally:
        await plain.aclose()


async def test_lanes_on_every_master_are_listed_and_deleted_whole(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    assert is_cluster(redis)
    keys = bs.Keys(key_prefix)
    profiles = ProfileStore(redis, keys, MasterKey.generate())
    txs = TxStore(redis, keys)
    ids = _lane_ids_on_every_master(redis, keys)
    for iid in ids:
        await profiles.create(
            LaneProfile(instance_id=iid, pos_id="POS1", serial_number="SIM-1", device_address="h")
        )
        await profiles.save_secrets(iid, KEYS)
        for ref in ("a-1", "a-2"):
            await txs.create_if_absent(
                iid, TxRecord(pos_ref_id=ref, command_id=f"c-{ref}", tx_type="purchase")
            )
        await txs.remember_command(iid, "c-a-1", b"{}")
    assert sorted(ids) == await profiles.list_ids()
    assert sorted(ids) == sorted(p.instance_id for p in await profiles.list())
    assert [2, 2, 2] == [len(await txs.in_flight(iid)) for iid in ids]

    await profiles.delete(ids[0])
    assert sorted(ids[1:]) == await profiles.list_ids()
    left = {k.decode() for k in await all_keys(redis, f"{key_prefix}:*")}
    assert not any(ids[0] in key for key in left)
    assert any(ids[1] in key for key in left)
    for iid in ids[1:]:
        await profiles.delete(iid)
    assert [] == await all_keys(redis, f"{key_prefix}:*")


async def test_a_lane_write_naming_a_key_of_another_slot_never_reaches_redis(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    assert is_cluster(redis)
    keys = bs.Keys(key_prefix)
    ours, other = _lane_ids_on_every_master(redis, keys)[:2]
    writer = LaneWriter(redis, keys, ours, None)
    batch = WriteBatch().hset(keys.state(ours), {"a": "1"}).hset(keys.state(other), {"a": "1"})
    with pytest.raises(InternalError, match="another slot"):
        await writer.apply(batch)
    with pytest.raises(InternalError, match="another slot"):  # mp:lanes has a slot of its own
        await writer.apply(WriteBatch().hset(keys.lanes(), {"a": "1"}))
    # What the guard spares the lane: such a script is refused outright on a cluster.
    script = redis.register_script("redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[2], 1)")
    with pytest.raises(RedisClusterException, match="same key slot"):
        await script(keys=[keys.state(ours), keys.state(other)])
    await writer.apply(WriteBatch().hset(keys.state(ours), {"a": "1"}))
    assert {b"a": b"1"} == await redis.hgetall(keys.state(ours))


async def test_a_supervisor_from_one_node_runs_lanes_on_every_master(
    redis: aioredis.Redis,
    redis_cluster: RedisCluster,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    """``multipair supervise`` and the client library, each from a different node's URL."""
    assert is_cluster(redis)
    async with paired_simulator(tmp_path / "sim", 3) as sim:
        fleet = Fleet(redis, redis_url, key_prefix, tmp_path, sim)
        keys = fleet.keys
        lanes: list[Lane] = []
        for index, iid in enumerate(_lane_ids_on_every_master(redis, keys)):
            terminal = sim.terminals[index]
            await fleet.profiles.create(
                LaneProfile(
                    instance_id=iid,
                    pos_id="POS1",
                    serial_number=terminal.serial,
                    device_address=terminal.ws_url,
                )
            )
            await fleet.profiles.save_secrets(iid, KEYS)
            lanes.append(
                Lane(redis, keys, iid, terminal.serial, EventReader(redis, keys.events(iid)))
            )
        supervisor = fleet.supervisor("host-c")
        try:
            await supervisor.start()
            for lane in lanes:
                await lane.wait_state(status="paired_connected")
                lease = await lane.lease()
                assert lease is not None
                assert "host-c" == lease.host_id
            other_node = redis_cluster.urls[1]
            settings = Settings.from_env({}, redis_url=other_node, prefix=key_prefix)
            async with await AsyncClient.connect(settings) as client:
                assert is_cluster(client.redis)
                outcomes = await asyncio.gather(
                    *(client.purchase(lane.instance_id, 1000 + i) for i, lane in enumerate(lanes))
                )
                assert ["success"] * 3 == [str(o.result) for o in outcomes]
                hosts = await client.hosts()
                assert ["host-c"] == [h["host_id"] for h in hosts]
                infos = await client.lanes_info()
                assert {"host-c"} == {info.lease_host for info in infos}
                assert 3 == len(infos)
        finally:
            await fleet.close()


async def test_leases_of_lanes_on_every_master_renew_in_one_call(
    redis_cluster: RedisCluster,
) -> None:
    client = await connect(redis_cluster.urls[0], max_connections=4)
    try:
        assert is_cluster(client)
        keys = bs.Keys(f"t{uuid.uuid4().hex[:12]}")
        manager = LeaseManager(client, keys, "host-a")
        held = []
        for iid in _lane_ids_on_every_master(client, keys):
            lease = await manager.acquire(iid)
            assert lease is not None
            held.append((iid, lease))
        stolen_iid, stolen = held[1]
        await manager.release(stolen_iid, stolen)

        assert [True, False, True] == await manager.renew_many(held)
    finally:
        await client.aclose()
