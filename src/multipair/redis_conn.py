"""One way to reach the lanes' Redis: a single server or a Redis Cluster, from any node's URL.

Every process of multipair (lane worker, supervisor, CLI, client library,
``multipair up``) builds its Redis client here, from ``MULTIPAIR_REDIS_URL``::

    redis = await connect(settings.redis_url)

The URL may name a standalone server or any node of a Redis Cluster: the
node is asked ``INFO cluster`` and, when it says ``cluster_enabled:1``, a
:class:`redis.asyncio.RedisCluster` is returned, which learns the slot map
from that node and sends each command to the master owning its key's slot
(following ``MOVED``/``ASK`` as slots move).

Typing: the result is typed :class:`redis.asyncio.Redis` for every caller.
``RedisCluster`` is not a subclass, but for what multipair calls it has the
same methods with the same meaning (single-key commands, ``XREAD``/
``XREADGROUP``/``XAUTOCLAIM`` on one stream, ``register_script`` whose
``EVALSHA`` is routed by its keys, non-transactional pipelines split per
node, and ``pipeline(transaction=True)`` with ``WATCH`` on keys of one slot).
multipair keeps to that subset on purpose: no command, script or
transaction names keys of two slots (docs/broker-schema.md, "Redis
Cluster"); ``tests/cluster`` runs the lane suite and the client tests
against a real three-master cluster to hold it there.
"""

from __future__ import annotations

from typing import Any, Final, cast

import redis as redis_sync
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError

from multipair.exceptions import ConfigurationError

__all__ = ["connect", "connect_blocking", "is_cluster"]

_PROBE_TIMEOUT_S: Final = 5.0


def is_cluster(client: object) -> bool:
    """Whether a client made by :func:`connect` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def _cluster_enabled(info: Any) -> bool:
    return isinstance(info, dict) and str(info.get("cluster_enabled", "0")) == "1"


def _probe_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The caller's connection options for the one-off probe, with bounded timeouts."""
    probe = dict(kwargs)
    for name in ("socket_connect_timeout", "socket_timeout"):
        given = probe.get(name)
        probe[name] = _PROBE_TIMEOUT_S if given is None else min(given, _PROBE_TIMEOUT_S)
    return probe


def _cluster_client(url: str, kwargs: dict[str, Any]) -> Redis:
    if url.startswith("unix://"):
        raise ConfigurationError(
            "MULTIPAIR_REDIS_URL names a Redis Cluster node over a unix socket; "
            "a cluster client needs redis:// or rediss:// host:port URLs"
        )
    # Cluster nodes only have database 0; a /0 path is fine, any other is refused.
    client = RedisCluster.from_url(url, **kwargs)
    return cast(Redis, client)


async def connect(url: str, **kwargs: Any) -> Redis:
    """A client for ``url``: a ``RedisCluster`` when that node is in a cluster, else ``Redis``.

    ``kwargs`` (timeouts, ``decode_responses`` …) go to either client. The
    probe is one ``INFO cluster`` on a connection that is closed at once;
    connection errors propagate as redis-py raises them (``ConnectionError``,
    ``TimeoutError``; a cluster whose slot map cannot be read is a
    ``ConnectionError`` too), so callers report an unreachable Redis as before. A
    server that refuses ``INFO`` (ACL) is taken as standalone. The cluster
    client has already read the slot map when it is returned.
    """
    probe = Redis.from_url(url, **_probe_kwargs(kwargs))
    try:
        try:
            info = await probe.info("cluster")
        except ResponseError:
            info = {}
    finally:
        await probe.aclose()
    if not _cluster_enabled(info):
        return Redis.from_url(url, **kwargs)
    client = _cluster_client(url, kwargs)
    try:
        await cast(RedisCluster, client).initialize()
    except RedisClusterException as exc:  # not a RedisError: say "unreachable" like the rest
        await client.aclose()
        raise RedisConnectionError(
            f"the Redis Cluster at {url.split('@')[-1]} is not usable: {exc}"
        ) from exc
    except BaseException:
        await client.aclose()
        raise
    return client


def connect_blocking(url: str, **kwargs: Any) -> Redis:
    """:func:`connect` for constructors that run before an event loop (a blocking probe).

    The returned async client reads the slot map on its first command.
    """
    probe = redis_sync.Redis.from_url(url, **_probe_kwargs(kwargs))
    try:
        try:
            info = probe.info("cluster")
        except ResponseError:
            info = {}
    finally:
        probe.close()
    if not _cluster_enabled(info):
        return Redis.from_url(url, **kwargs)
    return _cluster_client(url, kwargs)
