"""The settlement report in Redis: one hash per business day, and the runs' per-lane locks.

Keys (prefix ``mp``, ``MULTIPAIR_PREFIX``; docs/broker-schema.md, "Keys"):

- ``mp:settlement:{DAY}`` (hash): ``lane:<instance id>`` -> the lane's entry
  (JSON, :class:`~multipair.jobs.settlement.LaneRecord`); ``summary`` -> the
  fleet totals the last run computed; ``reconcile`` -> the last
  :func:`multipair.jobs.reconcile` result. Kept :data:`REPORT_TTL` after its
  last change.
- ``mp:settlement:{DAY}:lock:<instance id>`` (string): the token of the run
  settling that lane now, with a short TTL the run renews.
- ``mp:settlement:last`` (hash): instance id -> ``{"day", "at"}`` of its last
  successful settlement: where the next period's own records start.

``{DAY}`` is a Redis Cluster hash tag, so a day's report and its locks share
one slot. No command here names keys of two slots; the report is written a
field at a time (``HSET``), and only the run holding a lane's lock writes
that lane's field.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from multipair.broker_schema import parse_time
from multipair.broker_schema.keys import validate_prefix
from multipair.exceptions import CommandError
from multipair.jobs.settlement import LaneRecord, day_start
from multipair.redis_conn import as_text, redis_errors

__all__ = ["LANE_FIELD", "REPORT_TTL", "ReportStore"]

REPORT_TTL: Final = _dt.timedelta(days=400)
"""How long a day's report is kept after its last change (a year of books, and a margin)."""

LANE_FIELD: Final = "lane:"
"""Prefix of the report hash fields that hold a lane's entry."""

_SUMMARY: Final = "summary"
_RECONCILE: Final = "reconcile"

# Compare-and-extend / compare-and-delete: only the run that holds a lock touches it.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ReportStore:
    """Read and write the day reports and the per-lane locks under one key prefix."""

    def __init__(self, redis: Redis, prefix: str = "mp") -> None:
        self._redis = redis
        self._prefix = validate_prefix(prefix)

    def key(self, day: str) -> str:
        """``mp:settlement:{2025-01-31}``."""
        return f"{self._prefix}:settlement:{{{day}}}"

    def lock_key(self, day: str, instance_id: str) -> str:
        return f"{self.key(day)}:lock:{instance_id}"

    def last_key(self) -> str:
        return f"{self._prefix}:settlement:last"

    # ------------------------------------------------------------------ entries

    async def get(self, day: str, instance_id: str) -> LaneRecord | None:
        """The lane's entry of ``day``, or None."""
        with redis_errors():
            raw = await self._redis.hget(self.key(day), LANE_FIELD + instance_id)
        return None if raw is None else LaneRecord.from_json(orjson.loads(raw))

    async def put(self, day: str, record: LaneRecord) -> None:
        """Write the lane's entry (one field) and push the report's expiry back."""
        await self._hset(day, LANE_FIELD + record.instance_id, record.to_json())

    async def lanes(self, day: str) -> dict[str, LaneRecord]:
        """Every lane entry of ``day``, by instance id."""
        with redis_errors():
            raw: Any = await self._redis.hgetall(self.key(day))
        out: dict[str, LaneRecord] = {}
        for name, value in (raw or {}).items():
            field = as_text(name)
            if field.startswith(LANE_FIELD):
                record = LaneRecord.from_json(orjson.loads(value))
                out[record.instance_id] = record
        return out

    async def put_summary(self, day: str, summary: dict[str, Any]) -> None:
        await self._hset(day, _SUMMARY, summary)

    async def summary(self, day: str) -> dict[str, Any] | None:
        return await self._hget_json(day, _SUMMARY)

    async def put_reconcile(self, day: str, result: dict[str, Any]) -> None:
        await self._hset(day, _RECONCILE, result)

    async def reconciled(self, day: str) -> dict[str, Any] | None:
        return await self._hget_json(day, _RECONCILE)

    async def _hset(self, day: str, field: str, document: object) -> None:
        key = self.key(day)
        with redis_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, field, orjson.dumps(document))
                pipe.expire(key, int(REPORT_TTL.total_seconds()))
                await pipe.execute()

    async def _hget_json(self, day: str, field: str) -> dict[str, Any] | None:
        with redis_errors():
            raw = await self._redis.hget(self.key(day), field)
        if raw is None:
            return None
        value = orjson.loads(raw)
        return value if isinstance(value, dict) else None

    # ------------------------------------------------------------------ periods

    async def period_start(self, instance_id: str, day: str) -> _dt.datetime:
        """Where the lane's period for ``day`` starts: its last settlement, else the day's start.

        A last settlement recorded for ``day`` itself or a later day is not
        this period's start (a re-run must not count from its own settlement).
        """
        with redis_errors():
            raw = await self._redis.hget(self.last_key(), instance_id)
        if raw is not None:
            try:
                last = orjson.loads(raw)
                if str(last["day"]) < day:
                    return parse_time(str(last["at"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, CommandError):
                pass
        return day_start(day)

    async def set_last(self, instance_id: str, day: str, at: str) -> None:
        """Remember the lane's settlement of ``day`` (at ``at``), unless a later day's is kept."""
        with redis_errors():
            raw = await self._redis.hget(self.last_key(), instance_id)
            if raw is not None:
                try:
                    if str(orjson.loads(raw)["day"]) > day:
                        return
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass
            await self._redis.hset(
                self.last_key(), instance_id, orjson.dumps({"day": day, "at": at})
            )

    # ------------------------------------------------------------------ locks

    async def acquire(self, day: str, instance_id: str, token: str, ttl_ms: int) -> bool:
        """Take the lane's settlement lock for ``day`` if nobody holds it."""
        with redis_errors():
            return bool(
                await self._redis.set(self.lock_key(day, instance_id), token, nx=True, px=ttl_ms)
            )

    async def holder(self, day: str, instance_id: str) -> str | None:
        with redis_errors():
            raw = await self._redis.get(self.lock_key(day, instance_id))
        return None if raw is None else as_text(raw)

    async def renew(self, day: str, instance_ids: Iterable[str], token: str, ttl_ms: int) -> None:
        """Extend the locks this run holds (one script per lock: each is its own key)."""
        with redis_errors():
            for iid in instance_ids:
                await self._redis.eval(_RENEW, 1, self.lock_key(day, iid), token, str(ttl_ms))

    async def release(self, day: str, instance_id: str, token: str) -> None:
        with redis_errors():
            await self._redis.eval(_RELEASE, 1, self.lock_key(day, instance_id), token)
