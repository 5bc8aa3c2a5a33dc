"""Writes confirmed on replicas before a guarantee rests on them (issue 19, docs/deploy-ha.md).

Redis replicates asynchronously: a write the primary acknowledged may be
lost when a replica that never received it is promoted. Most of what a lane
writes can be lost that way without harm (a status, a counter); a few
writes carry a money guarantee and must survive a failover:

- the transaction record, before its request leaves for the terminal
  (else a new primary has no record and the request is sent again);
- the outcome with its event and acknowledgement (else it is lost);
- a fencing-counter increment, before its token is used (else a later
  owner may draw the same token again).

:class:`ReplicaWait` confirms them. ``WAIT numreplicas timeout`` counts the
replicas that acknowledged the replication offset of *the connection that
issues it*, so :meth:`ReplicaWait.confirm` sends, on one connection and in
one round trip, a small write on the lane's slot (``HINCRBY`` of a field of
the lane's ``writes`` hash) followed by ``WAIT``. The small write moves the
connection's offset to the primary's current offset, so the ``WAIT``
covers every write the primary took before it, on any connection: the
record written by an earlier script, or a write whose reply was lost and
that a retry found already applied (a replay writes nothing, so its own
connection's offset would not cover it). On a Redis Cluster both go to the
node that owns the lane's slot, on one of its connections (a keyless
``WAIT`` would otherwise go to every primary, each on its own connection).

``WAITAOF 1 n timeout`` (Redis 7.2+) replaces ``WAIT`` where the server has
it and its ``appendonly`` is on: the write is then also in the primary's
AOF and the replicas'. It is detected on first use (an error reply falls
back to ``WAIT`` for good).

With ``min_replicas`` 0 (the default, a single server) nothing is sent:
:func:`replica_wait` returns None and callers skip the step.

:func:`primary_identity` names the server that answers a key's slot (its
``run_id`` and replication id): a different answer after an outage means a
new primary (a failover, or a server restarted without its data), whatever
``MULTIPAIR_REDIS_MIN_REPLICAS`` says (docs/deploy-ha.md "After a failover").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import ResponseError

from multipair.exceptions import RetryLater
from multipair.redis_conn import is_cluster

__all__ = [
    "CONFIRM_BEFORE_SEND_S",
    "SYNC_FIELD",
    "Durability",
    "NotConfirmed",
    "ReplicaWait",
    "primary_identity",
    "replica_wait",
]

CONFIRM_BEFORE_SEND_S: Final = 5.0
"""How long a record waits to be confirmed before its request is refused (``redis_unavailable``)."""

# KEYS: any key of the slot asked about. Returns "run_id/master_replid" of the server
# that runs the script: a new process (run_id) or a promoted replica (a new replid).
_IDENTITY: Final = """
local server = redis.call('INFO', 'server')
local replication = redis.call('INFO', 'replication')
return (string.match(server, 'run_id:(%w+)') or '?') .. '/' ..
       (string.match(replication, 'master_replid:(%w+)') or '?')
"""

SYNC_FIELD: Final = "replication_sync"
"""The field of a lane's ``writes`` hash that :meth:`ReplicaWait.confirm` increments."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Durability:
    """How many replicas must hold a write a guarantee rests on, and how long one wait is."""

    min_replicas: int = 0
    """``MULTIPAIR_REDIS_MIN_REPLICAS``: 0 sends no ``WAIT`` at all."""
    wait_ms: int = 500
    """``MULTIPAIR_REDIS_WAIT_MS``: the timeout of one ``WAIT``."""


class NotConfirmed(RetryLater):
    """A write landed on the primary, but not enough replicas confirmed it in time.

    A :class:`RetryLater`: the lane's Redis wait tries the same write again
    (applied once, by its write id) and confirms again, as for Redis away.
    """


class ReplicaWait:
    """Confirms that the writes made so far on a lane's slot are on enough replicas."""

    def __init__(self, redis: Redis, durability: Durability) -> None:
        if durability.min_replicas < 1:
            raise ValueError("ReplicaWait needs min_replicas >= 1 (0: use no ReplicaWait)")
        self._redis = redis
        self.durability = durability
        self._aof: bool | None = None  # WAITAOF usable: unknown until the first confirm

    @property
    def min_replicas(self) -> int:
        return self.durability.min_replicas

    def _wait_command(self) -> tuple[Any, ...]:
        n, ms = self.durability.min_replicas, self.durability.wait_ms
        if self._aof is False:
            return ("WAIT", n, ms)
        return ("WAITAOF", 1, n, ms)

    async def confirm(self, sync_key: str) -> int:
        """How many replicas hold everything written so far (at least up to ``min_replicas``).

        ``sync_key`` is the lane's ``writes`` hash (any key of the lane's slot
        would do). Blocks up to ``wait_ms``. Connection errors propagate as
        redis-py raises them (the caller's Redis wait rides them out).
        """
        while True:
            wait = self._wait_command()
            replies = await self._pipeline(sync_key, wait)
            written, waited = replies
            if isinstance(written, Exception):
                raise written
            if isinstance(waited, ResponseError) and wait[0] == "WAITAOF":
                # Before 7.2 (unknown command), or appendonly off: WAIT, from now on.
                self._aof = False
                continue
            if isinstance(waited, Exception):
                raise waited
            if wait[0] == "WAITAOF":
                self._aof = True
                local, replicas = (int(x) for x in waited)
                return replicas if local >= 1 else 0
            return int(waited)

    async def ensure(self, sync_key: str) -> None:
        """:meth:`confirm`, raising :class:`NotConfirmed` when fewer replicas than asked hold it."""
        acked = await self.confirm(sync_key)
        if acked < self.durability.min_replicas:
            raise NotConfirmed(
                f"{acked} of {self.durability.min_replicas} replicas confirmed the write within "
                f"{self.durability.wait_ms} ms"
            )

    async def _pipeline(self, sync_key: str, wait: tuple[Any, ...]) -> list[Any]:
        """The sync write and ``wait``, on one connection, in one round trip; replies or errors."""
        bump = ("HINCRBY", sync_key, SYNC_FIELD, 1)
        if is_cluster(self._redis):
            cluster = cast(RedisCluster, self._redis)
            node = cluster.get_node_from_key(sync_key)
            if node is None:  # pragma: no cover - a key always has a primary
                raise RetryLater("no node owns the lane's slot now")
            commands = [PipelineCommand(0, *bump), PipelineCommand(1, *wait)]
            # One node, one connection, no retry: a retried WAIT on another
            # connection would count a connection offset of zero.
            await node.execute_pipeline(commands)
            return [c.result for c in commands]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*bump)
            pipe.execute_command(*wait)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies


def replica_wait(redis: Redis, durability: Durability) -> ReplicaWait | None:
    """A :class:`ReplicaWait` for ``durability``, or None when it asks for no replica."""
    return ReplicaWait(redis, durability) if durability.min_replicas > 0 else None


async def primary_identity(redis: Redis, key: str) -> str:
    """Who serves ``key``'s slot: ``"run_id/master_replid"`` of that primary (one round trip).

    A script rather than ``INFO``: it runs on the node that owns ``key`` on a
    Redis Cluster too. The ``run_id`` changes when the server restarts; the
    replication id changes when a replica is promoted. Either way the writes
    not yet replicated before the change may be gone.
    """
    execute: Any = redis.eval  # untyped in redis-py's async stubs
    reply = await execute(_IDENTITY, 1, key)
    return reply.decode() if isinstance(reply, bytes) else str(reply)
