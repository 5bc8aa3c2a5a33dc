"""Small helpers every store module shares: reply decoding and error mapping.

The stores accept a ``redis.asyncio.Redis`` made with or without
``decode_responses``; replies are turned into text here, in one place.
Connection failures become :class:`RetryLater` (DESIGN.md: Redis unreachable
is transient), and so does a Redis Cluster that is failing over (slots down
or not covered for a moment); everything else from Redis is our bug and
propagates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from multipair.exceptions import RetryLater

__all__ = ["as_text", "redis_errors", "text_map"]


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
