"""Reading a lane's events stream for the asyncio client: ``XREAD`` in bounded blocks.

:class:`EventReader` finds where the stream ends now (so waiting for an
answer starts *before* the command is added and misses nothing), reads up
to the end, or follows new events until a deadline. Each read blocks at
most :data:`_BLOCK_CHUNK_S`, so a Redis client made with a socket timeout
still works; entries that are not events of this version are skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, Final

from redis.asyncio import Redis

from multipair import broker_schema as bs
from multipair.exceptions import CommandError
from multipair.redis_conn import as_text, redis_errors

__all__ = ["EventCallback", "EventReader"]

EventCallback = Callable[[bs.Event], None]
"""Called with each progress event of a command (not its final answer)."""

# How long one XREAD may block; waits longer than this are several reads, so a
# Redis client made with a socket timeout still works.
_BLOCK_CHUNK_S: Final = 2.0
_READ_COUNT: Final = 256


class EventReader:
    """The events streams of the lanes under ``keys``."""

    def __init__(self, redis: Redis, keys: bs.Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def last_id(self, iid: str) -> str:
        """The id of the newest entry of the lane's events stream, ``0-0`` when empty."""
        with redis_errors():
            newest: Any = await self._redis.xrevrange(self._keys.events(iid), count=1)
        return as_text(newest[0][0]) if newest else "0-0"

    async def drain(self, iid: str, cursor: str) -> AsyncGenerator[tuple[str, bs.Event], None]:
        """Events after ``cursor`` up to the end of the stream as it is now."""
        while True:
            entries = await self.read(iid, cursor, block_ms=None)
            if not entries:
                return
            for entry_id, event in entries:
                cursor = entry_id
                if event is not None:
                    yield entry_id, event

    async def follow(
        self, iid: str, cursor: str, deadline: float | None
    ) -> AsyncGenerator[tuple[str, bs.Event], None]:
        """Events after ``cursor`` as they come, until ``deadline`` (loop time) if given."""
        loop = asyncio.get_running_loop()
        while True:
            if deadline is None:
                block = _BLOCK_CHUNK_S
            else:
                block = min(_BLOCK_CHUNK_S, deadline - loop.time())
                if block <= 0:
                    return
            entries = await self.read(iid, cursor, block_ms=max(1, int(block * 1000)))
            for entry_id, event in entries:
                cursor = entry_id
                if event is not None:
                    yield entry_id, event

    async def read(
        self, iid: str, cursor: str, *, block_ms: int | None
    ) -> list[tuple[str, bs.Event | None]]:
        """One XREAD after ``cursor``; entries that are not events of this version give None."""
        with redis_errors():
            reply: Any = await self._redis.xread(
                {self._keys.events(iid): cursor}, count=_READ_COUNT, block=block_ms
            )
        out: list[tuple[str, bs.Event | None]] = []
        for _, entries in reply or ():
            for entry_id, fields in entries:
                try:
                    event: bs.Event | None = bs.decode_event(fields)
                except CommandError:
                    event = None  # a newer event type, or not an event: skip it
                out.append((as_text(entry_id), event))
        return out
