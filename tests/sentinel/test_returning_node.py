"""Bringing a dead node back (docs/deploy-ha.md): a node that has not finished its first
sync must never be promoted, or the primary, made its replica, throws every write away.

The primary delays a diskless sync (5 s by default; 10 s here, as a large dataset
would), so a returning node stays empty for that long: the window in which a Sentinel
that wrongly sees the primary down (a loaded host, a short ``down-after``) promotes it.
A forced ``SENTINEL FAILOVER`` stands in for that wrong judgement. The first test shows
the loss the documented procedure prevents; the second, the procedure keeping every
write.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests import supervisor_rig
from tests.poll import poll_until_sync
from tests.redis_server import RedisServer
from tests.sentinel_servers import SentinelDeployment

deployment = supervisor_rig.sentinel_deployment

SYNC_DELAY_S = 10
"""The new primary's ``repl-diskless-sync-delay``: how long the returning node stays empty."""


def _force_failover(deployment: SentinelDeployment) -> str:
    """``SENTINEL FAILOVER`` on the first Sentinel: ``OK`` or the error it answered."""
    client: Any = deployment.sentinels[0].client()
    try:
        client.execute_command("SENTINEL", "FAILOVER", deployment.master_name)
    except redis.ResponseError as exc:
        return str(exc)
    finally:
        client.close()
    return "OK"


def _syncing(node: RedisServer) -> bool:
    """``node`` is a replica that has not finished its first sync."""
    with redis.Redis.from_url(node.url, decode_responses=True) as client:
        info = client.info("replication")
    return info["role"] == "slave" and (
        info.get("master_link_status") != "up" or int(info.get("master_sync_in_progress", 0)) == 1
    )


def _seen_by_every_sentinel(deployment: SentinelDeployment, node: RedisServer) -> None:
    """Until every Sentinel lists ``node`` as a replica that is up, connected and freshly
    read (``INFO``): it could promote it but for its priority."""

    def seen() -> bool:
        for sentinel in deployment.sentinels:
            client: Any = sentinel.client()
            try:
                replicas = client.sentinel_slaves(deployment.master_name)
            finally:
                client.close()
            if not any(
                r["port"] == node.port
                and not r.get("is_sdown")
                and not r.get("is_disconnected")
                and 0 < int(r.get("info-refresh", 0)) < 2000
                for r in replicas
            ):
                return False
        return True

    poll_until_sync(seen, "every Sentinel seeing the returning node up", 15, interval=0.05)


def _failed_over(deployment: SentinelDeployment) -> tuple[RedisServer, int]:
    """Kill the primary after writing ``money``; the new primary (holding one more key,
    ``after``) and the old one's port."""
    with redis.Redis.from_url(deployment.primary().url) as primary:
        primary.set("money", "kept")
    deployment.wait_replicated()
    old = deployment.kill_primary()
    new = deployment.node_on(deployment.wait_for_failover(old))
    with redis.Redis.from_url(new.url) as primary:
        primary.set("after", "1")
        # A slow first sync (a large dataset): a window no loaded machine closes early.
        primary.config_set("repl-diskless-sync-delay", str(SYNC_DELAY_S))
    return new, old


def _holds(node: RedisServer) -> list[bytes | None]:
    with redis.Redis.from_url(node.url) as client:
        return [client.get("money"), client.get("after")]


def test_a_node_promoted_before_its_first_sync_wipes_the_primary(
    deployment: SentinelDeployment,
) -> None:
    """Why the procedure exists: the returning node started as a plain replica (what
    docs/deploy-ha.md used to advise) is promoted while empty."""
    new, old = _failed_over(deployment)
    node = deployment.start_returning(old, priority=100)  # a plain replica
    _seen_by_every_sentinel(deployment, node)
    assert _syncing(node)
    assert "OK" == _force_failover(deployment)
    deployment.wait_for_failover(new.port or 0)

    def wiped() -> bool:
        return _holds(new) == [None, None]

    poll_until_sync(wiped, "the old primary resyncing from the empty one", 30, interval=0.1)
    assert [None, None] == _holds(node)


def test_a_returning_node_is_promoted_only_once_it_holds_the_data(
    deployment: SentinelDeployment,
) -> None:
    new, old = _failed_over(deployment)
    node = deployment.start_returning(old)
    _seen_by_every_sentinel(deployment, node)
    assert _syncing(node)
    refused = _force_failover(deployment)
    assert _syncing(node)  # still inside the window: the refusal meant something
    assert refused.startswith("NOGOODSLAVE"), refused
    assert [b"kept", b"1"] == _holds(new)

    deployment.make_promotable(node)
    assert [b"kept", b"1"] == _holds(node)
    answers: list[str] = []

    def promoted() -> bool:
        # A Sentinel refreshes a replica's priority with its INFO (every 10 s).
        answers.append(_force_failover(deployment))
        return answers[-1] == "OK"

    poll_until_sync(promoted, lambda: f"a forced failover taken: {answers[-3:]}", 30, interval=0.5)
    assert node.port == deployment.wait_for_failover(new.port or 0)
    assert [b"kept", b"1"] == _holds(node)


pytestmark = pytest.mark.timeout(120)
