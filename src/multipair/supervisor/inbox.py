"""The supervisor's side of the ops control stream: read, check, log, hand over.

:class:`ControlInbox` reads ``mp:host:{HOST}:control`` through consumer
group :data:`~multipair.supervisor.control.CONTROL_GROUP`: first the
messages left pending by an earlier run of this host, then new ones, for
ever. Each is checked (:func:`~multipair.supervisor.control.decode_control`,
and :data:`~multipair.supervisor.control.MAX_AGE_S`), logged with who asked,
handed to the host's ``handle`` callback, and acknowledged, whether it was
taken or refused, so a bad message is never read again and cannot stop the
loop. What a message does to the lanes is the host's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, RetryLater
from multipair.logs import get_logger
from multipair.redis_conn import as_text
from multipair.supervisor.control import (
    CONTROL_GROUP,
    CONTROL_MAXLEN,
    MAX_AGE_S,
    ControlMessage,
    decode_control,
    peek_requested_by,
)

__all__ = ["ControlInbox"]

log = get_logger("multipair.supervisor")

_CONTROL_BLOCK_MS: Final = 1000
_REDIS_RETRY_S: Final = 1.0


class ControlInbox:
    """One host's control stream; ``handle(entry_id, message)`` applies a message taken."""

    def __init__(
        self,
        redis: Redis,
        keys: bs.Keys,
        host_id: str,
        *,
        handle: Callable[[str, ControlMessage], Awaitable[None]],
        closing: Callable[[], bool],
        on_redis_error: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.host_id = host_id
        self._handle = handle
        self._closing = closing
        self._redis_error = on_redis_error

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group unless they exist."""
        try:
            await self.redis.xgroup_create(
                self.keys.host_control(self.host_id), CONTROL_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Pending messages of an earlier run first, then new ones, until the host closes."""
        stream = self.keys.host_control(self.host_id)
        cursor = "0"
        while not self._closing():
            try:
                reply: Any = await self.redis.xreadgroup(
                    CONTROL_GROUP,
                    self.host_id,
                    {stream: cursor},
                    count=32,
                    block=None if cursor != ">" else _CONTROL_BLOCK_MS,
                )
                entries = reply[0][1] if reply else []
                if cursor != ">" and not entries:
                    cursor = ">"
                for raw_id, fields in entries:
                    entry_id = as_text(raw_id)
                    if cursor != ">":
                        cursor = entry_id
                    await self._on_control(entry_id, fields or {})
                    await self.redis.xack(stream, CONTROL_GROUP, entry_id)
                if entries:  # senders need not trim: keep the stream short here
                    await self.redis.xtrim(stream, maxlen=CONTROL_MAXLEN, approximate=True)
            except (RedisError, OSError, RetryLater) as exc:
                self._redis_error()
                log.warning("control stream unreadable", error=str(exc))
                await asyncio.sleep(_REDIS_RETRY_S)
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    with contextlib.suppress(RedisError, OSError):
                        await self.ensure_group()

    async def _on_control(self, entry_id: str, fields: Any) -> None:
        """Validate one control message, log it with who asked, hand it over.

        A malformed message (size, fields, types, action: ``decode_control``)
        is refused with a log line naming the reason; the caller acknowledges
        it like any other, so it is not read again and cannot stop the loop.
        """
        age_s = time.time() - int(entry_id.partition("-")[0]) / 1000
        if age_s > MAX_AGE_S:
            log.warning(
                "control message too old: ignored",
                entry_id=entry_id,
                age_s=round(age_s),
                requested_by=peek_requested_by(fields),
            )
            return
        try:
            message = decode_control(fields)
        except CommandError as exc:
            log.warning(
                "bad control message: refused",
                entry_id=entry_id,
                reason=str(exc.reason),
                error=exc.detail,
                requested_by=peek_requested_by(fields),
            )
            return
        except Exception as exc:  # a bug in the decoder must not end the control loop
            log.error("control message unreadable: refused", entry_id=entry_id, error=repr(exc))
            return
        log.info(
            "control message",
            entry_id=entry_id,
            action=str(message.action),
            instance_id=message.instance_id,
            request_id=message.request_id,
            requested_by=message.requested_by,
        )
        await self._handle(entry_id, message)
