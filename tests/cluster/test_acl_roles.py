"""The Redis roles of deploy/redis/users.acl on a Redis Cluster: the cluster client's needs too.

Every node of the session's cluster gets the POS, ops and service users of
the ACL file, rendered by the shipped script for this test's key prefix (so
``--prefix`` is exercised as well). The POS client library then adds a
command and reads events, the ops CLI adds a lane and reads ``status``, and
a lane process runs as the service, each starting from one node's URL as
every multipair process does: ``INFO cluster``, the slot map (``CLUSTER
SLOTS``), ``COMMAND``, redirections. No node may log a denial.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.client import AsyncClient
from multipair.embedded import RedisCluster
from multipair.redis_conn import connect, is_cluster
from multipair.store.profiles import LaneProfile, ProfileStore
from tests.cli.helpers import Cli
from tests.deploy.redis_acl import PASSWORDS, USERS, password_files, render
from tests.poll import poll_until
from tests.worker.helpers import make_rig

ROLES = ("pos", "ops", "service")


def setuser_args(line: str) -> list[str]:
    """An ACL file line (``user NAME rules...``) as ``ACL SETUSER`` arguments.

    In the file a selector ``(...)`` spans several words; to ``ACL SETUSER``
    it is one argument.
    """
    words = line.split()[1:]
    args: list[str] = []
    open_selector: list[str] | None = None
    for word in words:
        if open_selector is not None:
            open_selector.append(word)
            if word.endswith(")"):
                args.append(" ".join(open_selector))
                open_selector = None
        elif word.startswith("(") and not word.endswith(")"):
            open_selector = [word]
        else:
            args.append(word)
    return args


@pytest.fixture
def roles(redis_cluster: RedisCluster, key_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The POS, ops and service users on every node; role -> URL of the first node."""
    out = tmp_path / "users.acl"
    done = render(out, password_files(tmp_path / "passwords"), "--prefix", key_prefix)
    assert 0 == done.returncode, done.stderr
    lines = [
        line
        for line in out.read_text(encoding="utf-8").splitlines()
        if line.split()[1] in {USERS[r] for r in ROLES}
    ]
    nodes = [redis.Redis.from_url(url) for url in redis_cluster.urls]
    try:
        for node in nodes:
            for line in lines:
                node.execute_command("ACL", "SETUSER", *setuser_args(line))  # type: ignore[no-untyped-call]
            node.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
        first = urlsplit(redis_cluster.urls[0])
        yield {
            role: f"redis://{USERS[role]}:{PASSWORDS[role]}@{first.hostname}:{first.port}/0"
            for role in ROLES
        }
        denials = [
            entry
            for node in nodes
            for entry in node.acl_log()
            if entry.get("username") in {USERS[r] for r in ROLES}
        ]
        assert [] == denials
    finally:
        for node in nodes:
            node.execute_command("ACL", "DELUSER", *(USERS[r] for r in ROLES))  # type: ignore[no-untyped-call]
            node.close()


async def test_pos_ops_and_service_work_on_a_cluster_without_a_denial(
    redis: aioredis.Redis, key_prefix: str, roles: dict[str, str], tmp_path: Path
) -> None:
    keys = bs.Keys(key_prefix)
    rig = await make_rig(redis, roles["service"], key_prefix, tmp_path, address="ws://127.0.0.1:9")
    try:
        await rig.process.start()
        await rig.wait_state(status="unpaired")
        await poll_until(
            lambda: redis.hget(keys.state(rig.instance_id), "heartbeat_at"), "a lane heartbeat"
        )
    finally:
        await rig.process.kill()
    profile = await ProfileStore(redis, keys).create(
        LaneProfile(pos_id="POS1", serial_number="S-1", device_address="ws://127.0.0.1:9")
    )
    iid = profile.instance_id
    await redis.xadd(keys.events(iid), {"v": "1", "body": orjson.dumps({"type": "battery"})})

    pos = await connect(roles["pos"])
    try:
        assert is_cluster(pos)
        client = AsyncClient(pos, prefix=key_prefix)
        await client.send(iid, bs.TerminalStatus(command_id="c-1"))
        # Not a whole event (the library skips it), but read all the same.
        assert [] == [e async for _, e in client.events(iid, since="0", follow=False)]
        read: Any = await pos.xread({keys.events(iid): "0"})
        assert [b'{"type":"battery"}'] == [f[b"body"] for _, f in read[0][1]]
        newest: Any = await pos.xrevrange(keys.events(iid), count=1)
        assert 1 == len(newest)
    finally:
        await pos.aclose()
    assert 1 == await redis.xlen(keys.commands(iid))

    cli = Cli(roles["ops"], key_prefix)
    added = await cli.run(
        "lane", "add", "--pos-id", "OPS1", "--serial", "OPS-1", "--address", "ws://127.0.0.1:9"
    )
    assert 0 == added.code, added
    status = await cli.run("status")
    assert 0 == status.code, status
    assert {rig.instance_id, iid, added.json()["instance_id"]} == {
        r["instance_id"] for r in status.json()["lanes"]
    }
