"""Waiting for a Sentinel deployment to be ready for its next failover."""

from __future__ import annotations

from typing import Any

import redis

from tests.poll import poll_until_sync
from tests.redis_server import RedisServerError
from tests.sentinel_servers import SentinelDeployment

__all__ = ["wait_healthy"]


def _replicas_seen(deployment: SentinelDeployment) -> list[list[dict[str, Any]]]:
    seen = []
    for sentinel in deployment.sentinels:
        client: Any = sentinel.client()
        try:
            seen.append(list(client.sentinel_slaves(deployment.master_name)))
        except redis.RedisError:
            seen.append([])
        finally:
            client.close()
    return seen


def wait_healthy(deployment: SentinelDeployment, timeout: float = 30.0) -> None:
    """Until the primary has every replica online and in sync, and every Sentinel sees each
    of them up (not ``s_down``, not disconnected) and promotable (a returning node's
    ``replica-priority`` 0 lifted): a failover can then promote one."""
    deployment.wait_replicated(timeout)

    def all_see_them_up() -> bool:
        ok = 0
        for replicas in _replicas_seen(deployment):
            up = [
                r
                for r in replicas
                if not r.get("is_sdown")
                and not r.get("is_disconnected")
                and r.get("master-link-status", "ok") == "ok"
                and int(r.get("slave-priority", 100)) > 0
            ]
            ok += len(up) >= deployment.replicas
        return ok == len(deployment.sentinels)

    poll_until_sync(
        all_see_them_up,
        lambda: f"Sentinels never saw the replicas up: {_replicas_seen(deployment)}",
        timeout,
        interval=0.1,
        error=RedisServerError,
    )
