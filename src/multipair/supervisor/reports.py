"""What the supervisor writes about a lane: its ``lane_*`` events, state fields and log lines.

Every write is fenced by the lane's lease, like the lane's own writes
(:func:`multipair.leases.fenced`): once another host owns the lane, nothing
from this one lands in its streams. The ``lease lost`` report is written
only while the lease is still ours or held by nobody. Each call is bounded by
:data:`~multipair.supervisor.outage.REDIS_CALL_S` and never raises for
Redis trouble: the failure is logged and counted (``on_redis_error``), and
the host goes on.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.leases import Lease, fenced, is_fenced_error
from multipair.logs import get_logger
from multipair.supervisor.decide import StopReason
from multipair.supervisor.outage import REDIS_CALL_S
from multipair.worker.logship import LOG_STREAM_MAXLEN

__all__ = ["LaneReports", "iso_now"]

log = get_logger("multipair.supervisor")

# Not fenced but guarded: written while the lease is still ours (token ARGV[1])
# or free, never once another host holds the lane. KEYS: lease, events.
# ARGV: token, maxlen, v, body.
_LEASE_LOST_REPORT: Final = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^(%d+):') ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'v', ARGV[3], 'body', ARGV[4])
return 1
"""

# Fenced (multipair.leases.fenced): called with the lease key and token prepended.
# KEYS: events, state. ARGV: maxlen, v, body, then state field/value pairs.
_PUBLISH_FENCED: Final = fenced(
    """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[2], 'body', ARGV[3])
if #ARGV > 3 then redis.call('HSET', KEYS[2], unpack(ARGV, 4)) end
return 1
"""
)

# Fenced. KEYS: state. ARGV: field/value pairs.
_STATE_FENCED: Final = fenced(
    """
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
)


def iso_now() -> str:
    """The wall clock now, as the contract writes times."""
    return bs.format_time(_dt.datetime.now(_dt.UTC))


class LaneReports:
    """The host's writes about its lanes, fenced by their leases; best effort."""

    def __init__(
        self,
        redis: Redis,
        keys: bs.Keys,
        host_id: str,
        *,
        events_maxlen: int,
        on_redis_error: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.host_id = host_id
        self.events_maxlen = events_maxlen
        self._redis_error = on_redis_error
        self._publish = redis.register_script(_PUBLISH_FENCED)
        self._state = redis.register_script(_STATE_FENCED)
        self._lease_lost_report = redis.register_script(_LEASE_LOST_REPORT)

    async def publish(
        self,
        iid: str,
        lease: Lease,
        event_cls: type[bs.Event],
        event_fields: Mapping[str, Any],
        **state: str,
    ) -> None:
        """Publish one ``lane_*`` event and set ``state`` fields, in one fenced step."""
        event = event_cls(instance_id=iid, at=_dt.datetime.now(_dt.UTC), **event_fields)
        entry = bs.encode_event(event)
        args: list[Any] = [lease.token, self.events_maxlen, entry["v"], entry["body"]]
        for name, value in state.items():
            args += [name, value]
        keys = [self.keys.lease(iid), self.keys.events(iid), self.keys.state(iid)]
        try:
            async with asyncio.timeout(REDIS_CALL_S):
                await self._publish(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if is_fenced_error(exc):
                log.warning("not published: this host's lease is gone", instance_id=iid)
            else:
                self._redis_error()
                log.warning("could not publish", instance_id=iid, error=str(exc))

    async def write_state(self, iid: str, lease: Lease, **state: str) -> None:
        """Set fields of the lane's state hash, fenced."""
        args: list[Any] = [lease.token]
        for name, value in state.items():
            args += [name, value]
        try:
            async with asyncio.timeout(REDIS_CALL_S):
                await self._state(keys=[self.keys.lease(iid), self.keys.state(iid)], args=args)
        except (RedisError, OSError) as exc:
            self._redis_error()
            log.warning("state not written", instance_id=iid, error=str(exc))

    async def lease_lost(self, iid: str, pid: int | None, lease: Lease | None) -> None:
        """Report ``lane_stopped`` "lease lost", unless another host owns the lane now."""
        if lease is None:
            return
        event = bs.LaneStopped(
            instance_id=iid,
            at=_dt.datetime.now(_dt.UTC),
            host=self.host_id,
            pid=pid,
            reason=str(StopReason.LEASE_LOST),
        )
        entry = bs.encode_event(event)
        try:
            async with asyncio.timeout(REDIS_CALL_S):
                written = await self._lease_lost_report(
                    keys=[self.keys.lease(iid), self.keys.events(iid)],
                    args=[lease.token, self.events_maxlen, entry["v"], entry["body"]],
                )
        except (RedisError, OSError) as exc:
            self._redis_error()
            log.warning("could not publish lane_stopped", instance_id=iid, error=str(exc))
            return
        if not written:
            log.info("lane_stopped not published: another host owns the lane", instance_id=iid)

    async def log_line(self, iid: str, event: str, **fields: object) -> None:
        """One line in the lane's own log stream (``multipair logs``), best effort.

        A lane that cannot start never ships the line that says why; its
        host adds it, so the lane's log read from anywhere ends with it.
        """
        line = {
            "module": "multipair.supervisor",
            "instance_id": iid,
            **fields,
            "event": event,
            "level": "error",
            "timestamp": iso_now(),
        }
        try:
            async with asyncio.timeout(REDIS_CALL_S):
                await self.redis.xadd(
                    self.keys.logs(iid),
                    {"v": "1", "line": orjson.dumps(line)},
                    maxlen=LOG_STREAM_MAXLEN,
                    approximate=True,
                )
        except (RedisError, OSError) as exc:
            log.info("lane log line not written", instance_id=iid, error=str(exc))
