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

Replies and errors: every reader accepts a client made with or without
``decode_responses``; :func:`as_text` and :func:`text_map` turn replies into
text, in one place. :func:`redis_errors` turns connection failures into
:class:`RetryLater` (DESIGN.md: Redis unreachable is transient), and so a
Redis Cluster that is failing over (slots down or not covered for a moment);
everything else from Redis is our bug and propagates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Final, cast

import redis as redis_sync
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.driver_info import DriverInfo
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from multipair import __version__
from multipair.exceptions import ConfigurationError, RetryLater

__all__ = [
    "POOL_WAIT_S",
    "RAW_REPLY",
    "allow_raw_replies",
    "as_text",
    "connect",
    "connect_blocking",
    "is_cluster",
    "redis_errors",
    "text_map",
]

_PROBE_TIMEOUT_S: Final = 5.0

POOL_WAIT_S: Final = 5.0
"""How long a command waits for a free pooled connection when ``max_connections`` is set."""


RAW_REPLY: Final = "multipair_raw_reply"
"""Option of ``execute_command``: the reply as the server sent it (:func:`allow_raw_replies`)."""


def allow_raw_replies(client: Redis, *commands: str) -> None:
    """Let ``client.execute_command(*args, multipair_raw_reply=True)`` skip redis-py's parsing.

    redis-py folds a stream entry's field list into a dict, so an entry that
    names a field twice (``v 1 body A body B``) reads as one field, the last;
    a reader that must see the entry as sent asks for the raw reply instead.
    redis-py hands a command's options to its response callback, so each
    callback of ``commands`` is wrapped once: with the option it returns the
    reply untouched, without it it parses as before. Works on ``Redis`` and
    ``RedisCluster`` (whose nodes share the client's callbacks) alike, with
    RESP2 or RESP3 replies (the caller reads either shape). Idempotent.
    """
    callbacks: Any = client.response_callbacks
    for command in commands:
        parse = callbacks.get(command)
        if getattr(parse, "_multipair_raw", False):
            continue

        def callback(response: Any, _parse: Any = parse, **options: Any) -> Any:
            if options.pop(RAW_REPLY, False):
                return response
            return response if _parse is None else _parse(response, **options)

        callback._multipair_raw = True  # type: ignore[attr-defined]
        callbacks[command] = callback


def as_text(value: Any) -> str:
    """A reply value as text (bytes are UTF-8)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An ``HGETALL`` reply as ``str -> str``."""
    return {as_text(k): as_text(v) for k, v in raw.items()}


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Turn "cannot reach Redis" (or a cluster mid-failover) into :class:`RetryLater`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise RetryLater(f"Redis is unreachable: {exc}") from exc
    except (ClusterDownError, SlotNotCoveredError, TryAgainError) as exc:
        raise RetryLater(f"the Redis Cluster is not serving that slot now: {exc}") from exc


def is_cluster(client: object) -> bool:
    """Whether a client made by :func:`connect` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


# Built once per process. Without it redis-py reads its own version from the
# installed package metadata (importlib.metadata, an e-mail header parser) for
# every new connection: ~2 ms of CPU each, three times per lane start. It also
# names us in CLIENT LIST (``lib-name=redis-py(multipair_v…)``) for ops.
_DRIVER_INFO: Final = DriverInfo(lib_version=redis_sync.__version__).add_upstream_driver(
    "multipair", __version__
)


def _with_driver(kwargs: dict[str, Any]) -> dict[str, Any]:
    if {"driver_info", "lib_name", "lib_version"} & kwargs.keys():
        return kwargs
    return {**kwargs, "driver_info": _DRIVER_INFO}


def _cluster_enabled(info: Any) -> bool:
    return isinstance(info, dict) and str(info.get("cluster_enabled", "0")) == "1"


def _probe_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The caller's connection options for the one-off probe, with bounded timeouts."""
    probe = dict(kwargs)
    for name in ("socket_connect_timeout", "socket_timeout"):
        given = probe.get(name)
        probe[name] = _PROBE_TIMEOUT_S if given is None else min(given, _PROBE_TIMEOUT_S)
    return probe


def _standalone_client(url: str, kwargs: dict[str, Any], max_connections: int | None) -> Redis:
    if max_connections is None:
        return Redis.from_url(url, **kwargs)
    # A bounded pool that *waits* for a free connection: redis-py's default
    # pool raises "Too many connections" past its limit instead, which a
    # burst of concurrent calls must never turn into failed writes.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT_S, **kwargs
    )
    return Redis.from_pool(pool)


def _cluster_client(url: str, kwargs: dict[str, Any], max_connections: int | None) -> Redis:
    if url.startswith("unix://"):
        raise ConfigurationError(
            "MULTIPAIR_REDIS_URL names a Redis Cluster node over a unix socket; "
            "a cluster client needs redis:// or rediss:// host:port URLs"
        )
    # Cluster nodes only have database 0; a /0 path is fine, any other is refused.
    if max_connections is not None:  # per node; the cluster client has no waiting pool
        kwargs = {**kwargs, "max_connections": max_connections}
    client = RedisCluster.from_url(url, **kwargs)
    return cast(Redis, client)


async def connect(url: str, *, max_connections: int | None = None, **kwargs: Any) -> Redis:
    """A client for ``url``: a ``RedisCluster`` when that node is in a cluster, else ``Redis``.

    ``max_connections`` bounds the connections the client opens (per node
    on a cluster): on a single server a command then waits up to
    :data:`POOL_WAIT_S` for a free one rather than failing. Long-running
    processes (supervisor, lanes) set it, so their footprint on the server
    is known; None keeps redis-py's default pool (100, raising past it).
    ``kwargs`` (timeouts, ``decode_responses`` …) go to either client. The
    probe is one ``INFO cluster`` on a connection that is closed at once;
    connection errors propagate as redis-py raises them (``ConnectionError``,
    ``TimeoutError``; a cluster whose slot map cannot be read is a
    ``ConnectionError`` too), so callers report an unreachable Redis as before. A
    server that refuses ``INFO`` (ACL) is taken as standalone. The cluster
    client has already read the slot map when it is returned.
    """
    kwargs = _with_driver(kwargs)
    probe = Redis.from_url(url, **_probe_kwargs(kwargs))
    try:
        try:
            info = await probe.info("cluster")
        except ResponseError:
            info = {}
    finally:
        await probe.aclose()
    if not _cluster_enabled(info):
        return _standalone_client(url, kwargs, max_connections)
    client = _cluster_client(url, kwargs, max_connections)
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


def connect_blocking(url: str, *, max_connections: int | None = None, **kwargs: Any) -> Redis:
    """:func:`connect` for constructors that run before an event loop (a blocking probe).

    The returned async client reads the slot map on its first command.
    """
    kwargs = _with_driver(kwargs)
    probe = redis_sync.Redis.from_url(url, **_probe_kwargs(kwargs))
    try:
        try:
            info = probe.info("cluster")
        except ResponseError:
            info = {}
    finally:
        probe.close()
    if not _cluster_enabled(info):
        return _standalone_client(url, kwargs, max_connections)
    return _cluster_client(url, kwargs, max_connections)
