"""Every write a lane makes to Redis, atomic and fenced (DESIGN.md "One owner").

A lane's writes that matter (state hash, events, acknowledgements, dead
letters, transaction record moves and outcomes) go through one Lua script
that runs a short list of whitelisted ops on the lane's keys in one step.
With a fencing token the script first checks the lane's lease still carries
that token, so a lane process that outlived its lease (frozen, cut off)
cannot write after its successor started: its write raises
:class:`~multipair.leases.LeaseLost` and the lane stops. Without a token (a
worker run by hand for debugging) the same script runs unfenced.

Besides plain commands (``HSET``, ``HSETNX``, ``HINCRBY``, ``XADD``, ``XACK``) a batch
may carry transaction record ops built by
:class:`~multipair.store.transactions.TxStore` (``TXMOVE``: a state move,
``TXDONE``: the outcome with its event), run by the same Lua functions as
the store's own scripts, and ``PATPAY`` (a pay-at-table payment stored,
indexed by bill and aged: ``pat_remember`` in :mod:`multipair.store.tx_lua`).
A refused ``TXMOVE`` (no record, a move the state table forbids) or a
``TXDONE`` of a missing record stops the batch there:
the ops after it are not applied, and :meth:`LaneWriter.apply` raises
:class:`~multipair.exceptions.LocalProtocolError` as the store would. A
``TXDONE`` of a record already completed records and publishes nothing (the
first outcome stands) and the batch goes on.

Every key of a batch must be one of the lane's own (``mp:lane:{ID}:...``):
they share the lane's hash tag, so the script is legal on a Redis Cluster.
:meth:`LaneWriter.apply` refuses a batch that names any other key.

Every batch is applied once, however often it is sent (issue 13): it gets
a write id on its first :meth:`LaneWriter.apply` and keeps it, and the
script runs inside :func:`multipair.store.once.once`. A batch applied again
after its reply was lost (Redis went away mid-call) returns the results of
the first time and writes nothing: no duplicate event, no second
``HINCRBY``, no second ``TXDONE``. The lane's caller retries with the same
``WriteBatch`` object until it lands (:mod:`multipair.worker.lane`).

A fence refusal says why: :class:`~multipair.leases.LeaseLost` (another
owner) or its subclass :class:`~multipair.leases.LeaseLapsed` (no lease at
all: it expired while Redis was away and its owner has not taken it back
yet).

**Confirmed on replicas** (issue 19, :mod:`multipair.store.durable`). With
a :class:`~multipair.store.durable.ReplicaWait` (``MULTIPAIR_REDIS_MIN_REPLICAS``
above 0), a batch that carries a record op (the ``sent`` move before the
request's frame leaves, the outcome with its event and acknowledgement) or
is marked ``durable`` is confirmed on the replicas after it is applied: a
batch not confirmed in time raises
:class:`~multipair.store.durable.NotConfirmed`, a ``RetryLater``, so the
lane's Redis wait applies the *same* batch again (a replay if it is still
on the primary, written afresh if a failover lost it) and confirms again,
until it is confirmed. Meanwhile the batch, outcome and all, is kept in
memory, and the round's frames do not leave. Without one, nothing extra is
sent.

The heartbeat has a script of its own (:meth:`LaneWriter.heartbeat`): one
round trip checks the profile still exists and, fenced, writes
``heartbeat_at``. Setting a time again is harmless: it needs no write id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from multipair.broker_schema import CONSUMER_GROUP, Keys
from multipair.exceptions import InternalError, LocalProtocolError
from multipair.leases import FENCE_CHECK_LUA, fenced, fenced_error, is_fenced_error
from multipair.redis_conn import as_text
from multipair.store.durable import ReplicaWait
from multipair.store.once import WriteLog, WriteTicket, once
from multipair.store.transactions import TX_LUA, TxOp

__all__ = ["LaneWriter", "TxResultCode", "WriteBatch"]

_ALLOWED: Final = frozenset(
    {"HSET", "HSETNX", "HINCRBY", "XADD", "XACK", "TXMOVE", "TXDONE", "PATPAY"}
)

# KEYS: the keys the ops name by index. ARGV, per op: name, k, k key indexes, n, n args.
# Returns {1, results} when every op ran, {0, results} when a record op was refused:
# its result {code, detail} is the last one and no later op ran. A plain command's
# result is 1; TXMOVE's is 2; TXDONE's is 2 (completed) or 1 (was completed already).
_RUN_OPS: Final = (
    TX_LUA
    + """
local results = {}
local i = 1
while i <= #ARGV do
  local name = ARGV[i]
  local nk = tonumber(ARGV[i + 1])
  local k = {}
  for j = 1, nk do k[j] = KEYS[tonumber(ARGV[i + 1 + j])] end
  local n = tonumber(ARGV[i + 2 + nk])
  local a = i + 3 + nk
  local last = a + n - 1
  i = last + 1
  if name == 'TXMOVE' then
    local code, cur = tx_move(k[1], ARGV[a], ARGV[a + 1], ARGV[a + 2],
                              {unpack(ARGV, a + 3, last)})
    if code ~= 2 then
      results[#results + 1] = {code, cur or ''}
      return {0, results}
    end
    results[#results + 1] = code
  elseif name == 'TXDONE' then
    local code = tx_complete(k[1], k[2], ARGV[a + 3], ARGV[a], ARGV[a + 1], ARGV[a + 2],
                             ARGV[a + 4])
    if code == 0 then
      results[#results + 1] = {0, ''}
      return {0, results}
    end
    if code == 2 then tx_publish(k[3], ARGV[a + 5], unpack(ARGV, a + 6, last)) end
    results[#results + 1] = code
  elseif name == 'PATPAY' then
    pat_remember(k[1], k[2], k[3], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
    results[#results + 1] = 1
  else
    redis.call(name, k[1], unpack(ARGV, a, last))
    results[#results + 1] = 1
  end
end
return {1, results}
"""
)

# KEYS: [lease,] profile, state. ARGV: [token,] heartbeat_at. Returns 0 when the profile is
# gone (nothing written), else 1. The profile is checked before the fence (a read), so a
# removed lane stops quietly, as it always did, rather than as a lost lease.
_PROFILE_CHECK: Final = "if redis.call('EXISTS', KEYS[#KEYS - 1]) == 0 then return 0 end\n"
_HEARTBEAT: Final = "redis.call('HSET', KEYS[2], 'heartbeat_at', ARGV[1])\nreturn 1\n"


class TxResultCode:
    """Results of record ops in :meth:`LaneWriter.apply`'s list."""

    DONE: Final = 2
    """TXMOVE moved; TXDONE recorded and published the outcome."""
    ALREADY_COMPLETED: Final = 1
    """TXDONE found the record completed: the first outcome stands, nothing published."""


@dataclass(slots=True)
class WriteBatch:
    """Writes to apply together; build with the methods, then :meth:`LaneWriter.apply`."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    """What each op does (its name, or a record op's description), by index."""
    ticket: WriteTicket | None = None
    """The batch's write id, set by its first :meth:`LaneWriter.apply` and kept for retries."""
    acked: list[str] = field(default_factory=list)
    """The command entries the batch acknowledges (``XACK``)."""
    durable: bool = False
    """Confirm it on the replicas once applied (set by every record op, :meth:`tx`)."""

    def __bool__(self) -> bool:
        return bool(self.ops)

    def _key_index(self, key: str) -> int:
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key) + 1

    def _op(self, name: str, keys: Sequence[str], args: Sequence[Any], what: str = "") -> int:
        assert name in _ALLOWED, name
        self.args.extend([name, len(keys), *(self._key_index(k) for k in keys), len(args), *args])
        self.ops.append(what or name)
        return len(self.ops) - 1

    def hset(self, key: str, mapping: Mapping[str, Any]) -> WriteBatch:
        flat: list[Any] = []
        for name, value in mapping.items():
            flat.extend([name, value])
        self._op("HSET", [key], flat)
        return self

    def hsetnx(self, key: str, name: str, value: Any) -> WriteBatch:
        """Set a hash field only if it is absent (the first pay-at-table payment of a ref)."""
        self._op("HSETNX", [key], [name, value])
        return self

    def pat_payment(
        self,
        keys: tuple[str, str, str],
        field: str,
        value: Any,
        entry: bytes,
        now_ms: int,
        prune_before_ms: int,
    ) -> WriteBatch:
        """Store a pay-at-table payment unless ``field`` is stored, index it by its bill entry,
        and prune entries stored before ``prune_before_ms`` (``pat_remember``, tx_lua.py).

        ``keys``: ``pat:payments``, ``pat:payments_at``, ``pat:bills``.
        """
        self._op("PATPAY", keys, [field, value, entry, now_ms, prune_before_ms])
        return self

    def hincrby(self, key: str, name: str, amount: int = 1) -> WriteBatch:
        self._op("HINCRBY", [key], [name, amount])
        return self

    def xadd(
        self,
        key: str,
        fields: Mapping[str, Any] | Sequence[tuple[Any, Any]],
        *,
        maxlen: int | None,
    ) -> WriteBatch:
        """Append an entry; ``fields`` as a mapping, or as (name, value) pairs (repeats kept)."""
        flat: list[Any] = ["MAXLEN", "~", maxlen, "*"] if maxlen else ["*"]
        for name, value in fields.items() if isinstance(fields, Mapping) else fields:
            flat.extend([name, value])
        self._op("XADD", [key], flat)
        return self

    def xack(self, stream: str, entry_id: str) -> WriteBatch:
        self._op("XACK", [stream], [CONSUMER_GROUP, entry_id])
        self.acked.append(entry_id)
        return self

    def tx(self, op: TxOp) -> int:
        """Add a record op; returns its index in the results of :meth:`LaneWriter.apply`."""
        self.durable = True  # a record op is what a guarantee rests on
        return self._op(op.name, op.keys, op.args, op.what)


class LaneWriter:
    """Applies :class:`WriteBatch` es for one lane, fenced by its lease token."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        instance_id: str,
        token: int | None,
        *,
        replicas: ReplicaWait | None = None,
    ) -> None:
        body = once(_RUN_OPS)
        self._script = redis.register_script(fenced(body) if token is not None else body)
        self.log = WriteLog(keys.writes(instance_id))
        """This process's write ids (shared with ``TxStore.begin``: one id space per lane)."""
        self._heartbeat = redis.register_script(
            _PROFILE_CHECK + (FENCE_CHECK_LUA if token is not None else "") + _HEARTBEAT
        )
        self._lease = keys.lease(instance_id)
        self._profile = keys.profile(instance_id)
        self._state = keys.state(instance_id)
        self._base = keys.lane_base(instance_id)
        self._token = token
        self.replicas = replicas
        """Confirms durable batches on the replicas; None: nothing is confirmed (no ``WAIT``)."""
        self.sync_key = keys.writes(instance_id)
        """The key :meth:`ReplicaWait.confirm` writes to move its connection's offset."""

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self._token is None:
            return await script(keys=keys, args=args)
        try:
            return await script(keys=[self._lease, *keys], args=[str(self._token), *args])
        except ResponseError as exc:
            if is_fenced_error(exc):
                raise fenced_error(exc, "lane write refused") from None
            raise

    def ticket(self) -> WriteTicket:
        """A new write id of this lane process (for ``TxStore.begin``)."""
        return self.log.ticket()

    async def apply(self, batch: WriteBatch) -> list[Any]:
        """Apply ``batch`` in one step, once; returns each op's result (:class:`TxResultCode`).

        Calling it again with the same ``batch`` (after a connection error)
        returns the first application's results if it landed, and applies
        it now if it did not. Raises :class:`LocalProtocolError` when a record
        op was refused (the ops after it were not applied), :class:`LeaseLost`
        when fenced out (:class:`LeaseLapsed` when the lease lapsed), and
        :class:`~multipair.store.durable.NotConfirmed` when a durable batch
        landed but too few replicas confirmed it (call again with the same
        batch).
        """
        if not batch.args:
            return []
        stray = [key for key in batch.keys if not key.startswith(self._base)]
        if stray:  # one script, one slot: a key of another slot fails on a cluster
            raise InternalError(f"a lane write names keys of another slot: {stray}")
        if batch.ticket is None:
            batch.ticket = self.log.ticket()
        script = self._script

        async def run(keys: list[Any], args: list[Any]) -> Any:
            return await self._run(script, keys, args)

        reply = await batch.ticket.call(run, batch.keys, batch.args)
        finished, results = int(reply[0]), list(reply[1])
        if not finished:
            code, detail = results[-1]
            what = batch.ops[len(results) - 1]
            if int(code) == 1:
                raise LocalProtocolError(f"cannot {what}: the record is {as_text(detail)}")
            raise LocalProtocolError(f"cannot {what}: there is no such record")
        if batch.durable and self.replicas is not None:
            await self.replicas.ensure(self.sync_key)
        return results

    async def heartbeat(self, at: str) -> bool:
        """Write ``heartbeat_at`` (one round trip); False, and no write, if the profile is gone."""
        return bool(await self._run(self._heartbeat, [self._profile, self._state], [at]))
