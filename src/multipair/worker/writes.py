"""Every write a lane makes to Redis, atomic and fenced (DESIGN.md "One owner").

A lane's writes that matter (state hash, events, acknowledgements, dead
letters) go through one Lua script that runs a short list of whitelisted
commands on the lane's keys in one step. With a fencing token the script
first checks the lane's lease still carries that token, so a lane process
that outlived its lease (frozen, cut off) cannot write after its successor
started: its write raises :class:`~multipair.leases.LeaseLost` and the lane
stops. Without a token (a worker run by hand for debugging) the same script
runs unfenced.

Every key of a batch must be one of the lane's own (``mp:lane:{ID}:...``):
they share the lane's hash tag, so the script is legal on a Redis Cluster.
:meth:`LaneWriter.apply` refuses a batch that names any other key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from multipair.broker_schema import CONSUMER_GROUP, Keys
from multipair.exceptions import InternalError
from multipair.leases import LeaseLost, fenced, is_fenced_error

__all__ = ["LaneWriter", "WriteBatch"]

_ALLOWED: Final = frozenset({"HSET", "HINCRBY", "XADD", "XACK"})

# KEYS: the keys the ops name by index. ARGV: per op: name, key index, n, n args.
_RUN_OPS: Final = """
local i = 1
local count = 0
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i + 1])]
  local n = tonumber(ARGV[i + 2])
  redis.call(ARGV[i], key, unpack(ARGV, i + 3, i + 2 + n))
  count = count + 1
  i = i + 3 + n
end
return count
"""


@dataclass(slots=True)
class WriteBatch:
    """Writes to apply together; build with the methods, then :meth:`LaneWriter.apply`."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def _op(self, name: str, key: str, args: Sequence[Any]) -> WriteBatch:
        assert name in _ALLOWED, name
        if key not in self.keys:
            self.keys.append(key)
        self.args.extend([name, self.keys.index(key) + 1, len(args), *args])
        return self

    def hset(self, key: str, mapping: Mapping[str, Any]) -> WriteBatch:
        flat: list[Any] = []
        for name, value in mapping.items():
            flat.extend([name, value])
        return self._op("HSET", key, flat)

    def hincrby(self, key: str, name: str, amount: int = 1) -> WriteBatch:
        return self._op("HINCRBY", key, [name, amount])

    def xadd(self, key: str, fields: Mapping[str, Any], *, maxlen: int | None) -> WriteBatch:
        flat: list[Any] = ["MAXLEN", "~", maxlen, "*"] if maxlen else ["*"]
        for name, value in fields.items():
            flat.extend([name, value])
        return self._op("XADD", key, flat)

    def xack(self, stream: str, entry_id: str) -> WriteBatch:
        return self._op("XACK", stream, [CONSUMER_GROUP, entry_id])


class LaneWriter:
    """Applies :class:`WriteBatch` es for one lane, fenced by its lease token."""

    def __init__(self, redis: Redis, keys: Keys, instance_id: str, token: int | None) -> None:
        self._script = redis.register_script(fenced(_RUN_OPS) if token is not None else _RUN_OPS)
        self._lease = keys.lease(instance_id)
        self._base = keys.lane_base(instance_id)
        self._token = token

    async def apply(self, batch: WriteBatch) -> None:
        if not batch.args:
            return
        stray = [key for key in batch.keys if not key.startswith(self._base)]
        if stray:  # one script, one slot: a key of another slot fails on a cluster
            raise InternalError(f"a lane write names keys of another slot: {stray}")
        if self._token is None:
            await self._script(keys=batch.keys, args=batch.args)
            return
        try:
            await self._script(
                keys=[self._lease, *batch.keys], args=[str(self._token), *batch.args]
            )
        except ResponseError as exc:
            if is_fenced_error(exc):
                raise LeaseLost("this lane's lease moved to another owner") from None
            raise
