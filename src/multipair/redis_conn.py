"""One way to reach the lanes' Redis: a single server, a Sentinel-watched primary, or a Cluster.

Every process of multipair (lane worker, supervisor, CLI, client library,
``multipair up``) builds its Redis client here, from ``MULTIPAIR_REDIS_URL``::

    redis = await connect(settings.redis_url)

The URL may name a standalone server or any node of a Redis Cluster: the
node is asked ``INFO cluster`` and, when it says ``cluster_enabled:1``, a
:class:`redis.asyncio.RedisCluster` is returned, which learns the slot map
from that node and sends each command to the master owning its key's slot
(following ``MOVED``/``ASK`` as slots move).

The URL may also name a Sentinel deployment (a primary with replicas, watched
by Sentinels that promote a replica when the primary dies)::

    redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB][?OPTIONS]

``HOST:PORT`` are the Sentinels (port 26379 when left out; ``[::1]:26379``
for IPv6), ``MASTER_NAME`` the name they monitor the primary under
(``sentinel monitor NAME ...``), ``DB`` the database (default 0). The user
and password are the *data nodes'* (the primary's and replicas' ``ACL`` user
or ``requirepass``). The Sentinels' own credentials, when they have any
(``requirepass`` in ``sentinel.conf``), are the options
``sentinel_username`` and ``sentinel_password`` (percent-encoded, like the
password in the user part); no other option is accepted.
``rediss+sentinel://`` speaks TLS to the Sentinels and the data nodes both.
:func:`multipair.config.Settings.from_env` also builds this URL from
``MULTIPAIR_REDIS_SENTINELS`` and ``MULTIPAIR_REDIS_MASTER_NAME``.

The client asks the Sentinels for the primary's address whenever it opens a
connection (redis-py's ``SentinelConnectionPool``), so it follows the
primary when the Sentinels move it: while they fail over, commands fail
with a connection error (``MasterNotFoundError`` included), which
:func:`redis_errors` and the lanes' classifier take as "Redis is away"; a
connection still open to the old primary, now a replica, answers writes with
``READONLY``, which redis-py turns into a connection error and a fresh
lookup (and :func:`redis_errors` treats as away too). Closing the client
closes its connections to the Sentinels as well.

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
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import parse_qsl, quote, unquote

import redis as redis_sync
import redis.sentinel as sentinel_sync
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.driver_info import DriverInfo
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
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
    "AWAY_REPLIES",
    "DEFAULT_SENTINEL_PORT",
    "POOL_WAIT_S",
    "RAW_REPLY",
    "SENTINEL_SCHEMES",
    "SentinelURL",
    "allow_raw_replies",
    "as_text",
    "connect",
    "connect_blocking",
    "connect_sync",
    "is_cluster",
    "is_sentinel_url",
    "parse_sentinel_url",
    "parse_sentinels",
    "redis_errors",
    "sentinel_url",
    "text_map",
    "url_for_logs",
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


AWAY_REPLIES: Final = ("LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "UNBLOCKED")
"""Error replies that mean "this server cannot serve that now", not "your command is wrong":
loading its data, a replica cut off from its primary, a write to a replica, a
Cluster slot moving or down, and ``UNBLOCKED`` (a blocking read cut short because
its server was demoted to a replica by ``CLUSTER FAILOVER`` or ``SENTINEL
FAILOVER``). Wait, then try again; the primary may have moved."""


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Turn "cannot reach Redis" (or a primary or cluster mid-failover) into :class:`RetryLater`.

    ``READONLY`` is a write that reached a replica: a primary demoted by a
    failover (a Sentinel client drops that connection and looks the primary
    up again on the next command) or a server an operator demoted; either way
    the write did not happen and another try may land on the new primary.
    The other replies of :data:`AWAY_REPLIES` (``MASTERDOWN``, ``UNBLOCKED``,
    ``LOADING``, …) say the same: not now, here.
    """
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise RetryLater(f"Redis is unreachable: {exc}") from exc
    except ReadOnlyError as exc:
        raise RetryLater(f"Redis answered as a replica (failing over?): {exc}") from exc
    except (ClusterDownError, SlotNotCoveredError, TryAgainError) as exc:
        raise RetryLater(f"the Redis Cluster is not serving that slot now: {exc}") from exc
    except ResponseError as exc:
        if str(exc).startswith(AWAY_REPLIES):
            raise RetryLater(f"Redis cannot serve now: {exc}") from exc
        raise


def is_cluster(client: object) -> bool:
    """Whether a client made by :func:`connect` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


SENTINEL_SCHEMES: Final = ("redis+sentinel://", "rediss+sentinel://")
"""URL schemes of a Sentinel deployment (see the module docstring)."""

DEFAULT_SENTINEL_PORT: Final = 26379

_SENTINEL_OPTIONS: Final = ("sentinel_username", "sentinel_password")
_MASTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_USERINFO_PASSWORD = re.compile(r"^([a-z+]+://[^:/@]*:)[^@]*@")
_OPTION_PASSWORD = re.compile(r"([?&]sentinel_password=)[^&#]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL (:func:`parse_sentinel_url`)."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    """The data nodes' credentials."""
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    """The Sentinels' own credentials."""
    ssl: bool = False

    def __repr__(self) -> str:
        hosts = ",".join(_join_host_port(host, port) for host, port in self.sentinels)
        secret = "***" if self.password is not None else None
        return (
            f"SentinelURL(sentinels={hosts!r}, master_name={self.master_name!r}, db={self.db}, "
            f"username={self.username!r}, password={secret!r}, ssl={self.ssl})"
        )


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel deployment (``redis+sentinel://``, ``rediss+sentinel://``)."""
    return url.startswith(SENTINEL_SCHEMES)


def url_for_logs(url: str) -> str:
    """``url`` with the password of its user part and any ``sentinel_password`` as ``***``."""
    return _OPTION_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``"h1:26379,h2:26379"`` as ``(("h1", 26379), ("h2", 26379))``.

    The port defaults to 26379; an IPv6 address goes in brackets. Raises
    :class:`ConfigurationError` naming the bad entry.
    """
    found: list[tuple[str, int]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise ConfigurationError(f"an empty Sentinel address in {text!r}")
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or not host or ":" not in host or (rest and not rest.startswith(":")):
                raise ConfigurationError(f"bad Sentinel address {entry!r}: use [IPv6]:PORT")
            port_text = rest[1:] if rest else None
        else:
            host, sep, port_text_or_empty = entry.partition(":")
            port_text = port_text_or_empty if sep else None
            if not _HOST.fullmatch(host):
                raise ConfigurationError(
                    f"bad Sentinel address {entry!r}: HOST:PORT with a host name or IPv4 address"
                )
        port = DEFAULT_SENTINEL_PORT
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ConfigurationError(
                    f"bad Sentinel address {entry!r}: the port must be 1 to 65535"
                )
            port = int(port_text)
        if (host, port) in found:
            raise ConfigurationError(f"Sentinel {entry!r} is listed twice")
        found.append((host, port))
    return tuple(found)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read a ``redis+sentinel://`` URL (module docstring); :class:`ConfigurationError` if bad.

    Error messages never quote the URL itself (it may hold passwords).
    """
    if not is_sentinel_url(url):
        raise ConfigurationError(
            "a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://"
        )
    scheme, _, rest = url.partition("://")
    if "#" in rest:
        raise ConfigurationError("a Sentinel URL has no #fragment")
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    if not hosts:
        raise ConfigurationError("a Sentinel URL names no Sentinel (HOST:PORT after //)")
    sentinels = parse_sentinels(hosts)
    name, _, db_text = path.partition("/")
    name = unquote(name)
    if not name:
        raise ConfigurationError(
            "a Sentinel URL names no master: redis+sentinel://HOST:PORT/MASTER_NAME"
        )
    if not _MASTER_NAME.fullmatch(name):
        raise ConfigurationError(
            f"bad Sentinel master name {name!r}: letters, digits and '._:-', at most 128"
        )
    db = 0
    db_text = db_text.rstrip("/")
    if db_text:
        if not db_text.isdigit():
            raise ConfigurationError(f"bad database {db_text!r} in a Sentinel URL: a number")
        db = int(db_text)
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in _SENTINEL_OPTIONS:
            raise ConfigurationError(
                f"unknown option {key!r} in a Sentinel URL (known: {', '.join(_SENTINEL_OPTIONS)})"
            )
        if key in options:
            raise ConfigurationError(f"option {key!r} is given twice in a Sentinel URL")
        options[key] = value
    return SentinelURL(
        sentinels=sentinels,
        master_name=name,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        ssl=scheme == "rediss+sentinel",
    )


def sentinel_url(
    sentinels: tuple[tuple[str, int], ...],
    master_name: str,
    *,
    username: str | None = None,
    password: str | None = None,
    sentinel_username: str | None = None,
    sentinel_password: str | None = None,
    db: int = 0,
    ssl: bool = False,
) -> str:
    """The ``redis+sentinel://`` URL of these parts (the inverse of :func:`parse_sentinel_url`)."""
    auth = ""
    if username is not None or password is not None:
        auth = quote(username or "", safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        auth += "@"
    hosts = ",".join(_join_host_port(host, port) for host, port in sentinels)
    options = [
        f"{key}={quote(value, safe='')}"
        for key, value in (
            ("sentinel_username", sentinel_username),
            ("sentinel_password", sentinel_password),
        )
        if value is not None
    ]
    scheme = "rediss+sentinel" if ssl else "redis+sentinel"
    query = "?" + "&".join(options) if options else ""
    return f"{scheme}://{auth}{hosts}/{quote(master_name, safe='')}/{db}{query}"


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


class _SentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool that also closes the Sentinel clients it looks the primary up with.

    ``Sentinel.master_for`` leaves those to the caller; here the returned
    client owns them, so ``await client.aclose()`` leaves no socket open.
    """

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class _BlockingSentinelPool(_SentinelPool, BlockingConnectionPool):
    """:class:`_SentinelPool` that waits for a free connection past ``max_connections``."""


class _SyncSentinelPool(sentinel_sync.SentinelConnectionPool):
    """The blocking twin of :class:`_SentinelPool`."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.sentinel_manager.close()


def _sentinel_kwargs(parsed: SentinelURL, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Options of the connections to the Sentinels: their credentials, bounded timeouts.

    A Sentinel that hangs must not hold up the lookup (redis-py then asks the next).
    """
    options: dict[str, Any] = {"driver_info": _DRIVER_INFO}
    for name in ("socket_connect_timeout", "socket_timeout"):
        given = kwargs.get(name)
        options[name] = _PROBE_TIMEOUT_S if given is None else min(given, _PROBE_TIMEOUT_S)
    if parsed.sentinel_username is not None:
        options["username"] = parsed.sentinel_username
    if parsed.sentinel_password is not None:
        options["password"] = parsed.sentinel_password
    if parsed.ssl:
        options["ssl"] = True
    return options


def _data_kwargs(parsed: SentinelURL, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Options of the connections to the primary: the caller's, and the URL's db and user."""
    options = dict(kwargs)
    options["db"] = parsed.db
    if parsed.username is not None:
        options["username"] = parsed.username
    if parsed.password is not None:
        options["password"] = parsed.password
    if parsed.ssl:
        options["ssl"] = True
    return options


def _sentinel_client(url: str, kwargs: dict[str, Any], max_connections: int | None) -> Redis:
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=_sentinel_kwargs(parsed, kwargs))
    options = _data_kwargs(parsed, kwargs)
    if max_connections is None:
        client: Redis = sentinel.master_for(
            parsed.master_name, connection_pool_class=_SentinelPool, **options
        )
    else:  # a waiting pool, as for a single server (_standalone_client)
        client = sentinel.master_for(
            parsed.master_name,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections,
            timeout=POOL_WAIT_S,
            **options,
        )
    return client


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

    A ``redis+sentinel://`` URL gives a ``Redis`` on the primary the Sentinels
    name (module docstring); the probe is then asking them for its address
    (``MasterNotFoundError``, a ``ConnectionError``, when none answers or none
    knows a primary).
    """
    kwargs = _with_driver(kwargs)
    if is_sentinel_url(url):
        client = _sentinel_client(url, kwargs, max_connections)
        try:
            pool: Any = client.connection_pool  # a _SentinelPool (redis-py leaves it untyped)
            await pool.get_master_address()
        except BaseException:
            await client.aclose()
            raise
        return client
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

    The returned async client reads the slot map on its first command (asks
    the Sentinels for the primary, for a ``redis+sentinel://`` URL).
    """
    kwargs = _with_driver(kwargs)
    if is_sentinel_url(url):
        return _sentinel_client(url, kwargs, max_connections)
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


def connect_sync(url: str, **kwargs: Any) -> redis_sync.Redis:
    """A blocking ``redis.Redis`` for ``url``: a single server, or the primary of a
    ``redis+sentinel://`` URL (no Cluster: RQ and other blocking users need one server).

    ``kwargs`` go to the connections to the data node. Closing the client
    closes its Sentinel connections too.
    """
    kwargs = _with_driver(kwargs)
    if not is_sentinel_url(url):
        return redis_sync.Redis.from_url(url, **kwargs)
    parsed = parse_sentinel_url(url)
    sentinel = sentinel_sync.Sentinel(
        parsed.sentinels, sentinel_kwargs=_sentinel_kwargs(parsed, kwargs)
    )
    client: redis_sync.Redis = sentinel.master_for(
        parsed.master_name, connection_pool_class=_SyncSentinelPool, **_data_kwargs(parsed, kwargs)
    )
    return client
