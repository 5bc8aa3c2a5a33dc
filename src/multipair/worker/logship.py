"""A lane's recent log lines in Redis: ``mp:lane:{ID}:logs``, what ``multipair logs`` reads.

A lane's log lines go to its host's stderr (one log per host); to read one
lane's lines from any machine, without knowing which host ran it or
reaching that host's files, the lane also appends each line to a stream of
its own in Redis, trimmed to about :data:`LOG_STREAM_MAXLEN` lines: the
newest lines of the lane wherever it ran, bounded in size whatever the
fleet (1,000 lanes: a few tens of MiB at most).

Rules this module keeps:

- The shipper is a structlog processor placed after the redaction step
  (:func:`multipair.logs.redact_secrets`): what reaches Redis is what the
  host log shows, never a key.
- Logging never waits for Redis, and shipping never touches the lane's
  event loop: a line is put in a bounded queue (the oldest are dropped past
  :data:`QUEUE_MAX`) and a daemon thread of its own, with its own blocking
  connection, writes the queue out every :data:`FLUSH_EVERY_S` in one
  pipelined round trip. (Done as an asyncio task, its writes changed the
  timing of the lane's own shutdown enough to lose a cancellation in a
  blocking read: the lane's loop is left alone.) While Redis is away the
  lines wait; what does not fit is lost (the host log has everything).
- Each entry is ``v`` = ``1`` and ``line`` = the JSON line (at most
  :data:`LINE_MAX` bytes; a longer one is cut and marked ``"truncated": true``).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, Final, cast

import orjson
from redis import Redis, RedisCluster
from redis.exceptions import RedisError, ResponseError

from multipair.redis_conn import connect_sync, is_sentinel_url

__all__ = [
    "FLUSH_EVERY_S",
    "LINE_MAX",
    "LOG_STREAM_MAXLEN",
    "QUEUE_MAX",
    "LogShipper",
    "shipper_client",
]

LOG_STREAM_MAXLEN: Final = 200
"""Lines kept per lane (``XADD ... MAXLEN ~``: about this many, a few more at times)."""
LINE_MAX: Final = 4096
"""Bytes of one line kept (a traceback is cut)."""
QUEUE_MAX: Final = 1000
"""Lines waiting for Redis at most; older ones are dropped first."""
FLUSH_EVERY_S: Final = 0.25
_CALL_TIMEOUT_S: Final = 2.0


class LogShipper:
    """Copy every log line of this process to one Redis stream, from a thread of its own.

    ``connect`` makes the shipper's own blocking client (called in the thread);
    :meth:`start` starts the thread, :meth:`close` writes what is left (bounded)
    and stops it.
    """

    def __init__(self, connect: Callable[[], Redis], stream: str) -> None:
        self._connect = connect
        self._stream = stream
        self._queue: collections.deque[bytes] = collections.deque(maxlen=QUEUE_MAX)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: Redis | None = None

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor: queue a JSON copy of the line; the line goes on unchanged."""
        line = orjson.dumps(event_dict, default=str)
        if len(line) > LINE_MAX:
            cut = {**event_dict, "truncated": True}
            for name in ("exception", "detail", "error"):
                if isinstance(cut.get(name), str):
                    cut[name] = cut[name][-LINE_MAX // 2 :]
            line = orjson.dumps(cut, default=str)[:LINE_MAX]
        with self._lock:
            self._queue.append(line)
        self._wake.set()
        return event_dict

    def start(self) -> None:
        """Start writing lines out (a daemon thread: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop the thread."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._redis = self._connect()
        except (RedisError, OSError):
            return  # no Redis for lines: the host log has them
        try:
            while not self._closing.is_set():
                self._wake.wait()
                self._wake.clear()
                self.flush()
                self._closing.wait(FLUSH_EVERY_S)
            self.flush()
        finally:
            with contextlib.suppress(RedisError, OSError):
                self._redis.close()

    def flush(self) -> None:
        """Write every queued line now; on a Redis error keep them for the next try."""
        if self._redis is None:
            return
        with self._lock:
            lines = list(self._queue)
            self._queue.clear()
        if not lines:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for line in lines:
                    pipe.xadd(
                        self._stream,
                        {"v": "1", "line": line},
                        maxlen=LOG_STREAM_MAXLEN,
                        approximate=True,
                    )
                pipe.execute()
        except (RedisError, OSError):
            # Redis away: the lines wait for the next try, the oldest dropped past the
            # bound (the host log has them all).
            with self._lock:
                self._queue = collections.deque([*lines, *self._queue], maxlen=QUEUE_MAX)


def shipper_client(url: str) -> Callable[[], Redis]:
    """How a shipper connects: a blocking client of its own (a cluster's when ``url`` names
    a cluster node), every call bounded."""

    def connect() -> Redis:
        options: dict[str, Any] = {
            "socket_timeout": _CALL_TIMEOUT_S,
            "socket_connect_timeout": _CALL_TIMEOUT_S,
        }
        if is_sentinel_url(url):  # the primary the Sentinels name, followed as it moves
            return connect_sync(url, max_connections=1, **options)
        probe = Redis.from_url(url, **options)
        try:
            try:
                info: Any = probe.info("cluster")
            except ResponseError:
                info = {}
        finally:
            probe.close()
        if isinstance(info, dict) and str(info.get("cluster_enabled", "0")) == "1":
            return cast(Redis, RedisCluster.from_url(url, **options))
        return Redis.from_url(url, max_connections=1, **options)

    return connect
