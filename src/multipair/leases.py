"""Lane leases and fencing tokens (DESIGN.md "One owner").

A lane runs on at most one host. The owning supervisor holds the lease
``mp:lane:{ID}:lease``, whose value is ``"<token>:<host_id>"`` and which
expires after ``ttl_ms`` unless renewed. The token comes from
``INCR mp:lane:{ID}:fence``, so every new owner holds a strictly larger token
than every earlier one.

Rules:

- Acquire, renew and release are single Lua scripts on the lane's slot, so
  they are atomic and work on Redis Cluster (both keys share the ``{ID}``
  hash tag). A host renews all its leases in one pipeline per period
  (:meth:`LeaseManager.keep_many`).
- Renewal succeeds only while the value is still exactly ours, or while it
  is absent and the fence counter still holds our token (nobody took the
  lane since it lapsed: it is set again, same value); a supervisor whose
  renewal is refused has lost the lane and must stop it at once.
- Fencing: a lane process is started with its owner's token. Every write that
  matters (state, events, outcomes, XACK) runs in a script that first checks
  the lease still carries that token (:data:`FENCE_CHECK_LUA`), so a process
  that outlived its lease (frozen, partitioned) cannot write after its
  successor started.
- A refused write says why: ``FENCED lease lost`` (another token holds the
  lease) raises :class:`LeaseLost`; ``FENCED lease lapsed`` (no lease at all:
  it expired unrenewed, e.g. while Redis was away) raises its subclass
  :class:`LeaseLapsed`. A lapsed lease may still be taken back by its owner
  (:meth:`LeaseManager.keep_many`) as long as nobody took the lane since: the
  fence counter still equals the owner's token. A lane that just rode out a
  Redis outage waits a moment for that; any other caller treats it as lost.
- After a failover the new primary may have lost the fence's latest
  increments (asynchronous replication): its counter is below the token in
  use. Taking the lease back then sets the counter to that token again
  (:attr:`LeaseKept.RESTORED`), so the next owner draws a larger one: tokens
  stay strictly increasing across the failover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from multipair.broker_schema import Keys
from multipair.exceptions import MultipairError

__all__ = [
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_RENEW_EVERY_MS",
    "FENCED_ERROR",
    "FENCED_LAPSED",
    "FENCE_CHECK_LUA",
    "KEEP_LUA",
    "RELEASE_IF_HELD_LUA",
    "RENEW_IF_HELD_LUA",
    "FencedScript",
    "Lease",
    "LeaseHolder",
    "LeaseKept",
    "LeaseLapsed",
    "LeaseLost",
    "LeaseManager",
    "fenced",
    "fenced_error",
    "is_fenced_error",
    "parse_lease",
]

DEFAULT_LEASE_TTL_MS: Final = 6_000
"""A dead host's lanes are free 6 s after its last renewal (issue 7's goal: live within 10 s)."""

DEFAULT_RENEW_EVERY_MS: Final = 1_500
"""Renew four times per TTL, so two lost renewals in a row still leave margin."""

FENCED_ERROR: Final = "FENCED"
FENCED_LAPSED: Final = "FENCED lease lapsed"
"""The fence's refusal when there is no lease at all (it expired unrenewed)."""

# Prologue of a fenced script: the caller passes the lease key as KEYS[1] and
# its token as ARGV[1]; both are checked, then removed, so the original script
# body below runs with its own KEYS and ARGV unchanged. No lease: "lapsed"
# (its owner may take it back, see KEEP_LUA); another token's: "lost".
FENCE_CHECK_LUA: Final = """
local fence_key = table.remove(KEYS, 1)
local fence_token = table.remove(ARGV, 1)
local fence_lease = redis.call('GET', fence_key)
if not fence_lease then
  return redis.error_reply('FENCED lease lapsed')
end
if string.match(fence_lease, '^(%d+):') ~= fence_token then
  return redis.error_reply('FENCED lease lost')
end
"""


def fenced(script: str) -> str:
    """The fenced variant of a script: call it with the lease key and token prepended."""
    return FENCE_CHECK_LUA + script


class LeaseLost(MultipairError):
    """A fenced write was refused: another process owns this lane now. Stop at once."""


class LeaseLapsed(LeaseLost):
    """A fenced write was refused because the lane has no lease at all.

    It expired unrenewed (Redis was away longer than its TTL, or its owner
    froze). Nobody else may hold the lane yet, and the owner takes it back
    when it can (:meth:`LeaseManager.keep_many`). A lane that has just seen
    Redis come back waits a moment for that and writes again; anyone else
    treats it as :class:`LeaseLost`, its base class.
    """


def is_fenced_error(exc: BaseException) -> bool:
    """Whether a Redis error is the fence refusing a stale owner's write."""
    return isinstance(exc, ResponseError) and str(exc).startswith(FENCED_ERROR)


def fenced_error(exc: ResponseError, what: str) -> LeaseLost:
    """The :class:`LeaseLost` (or :class:`LeaseLapsed`) a fence refusal stands for."""
    if str(exc).startswith(FENCED_LAPSED):
        return LeaseLapsed(f"{what}: the lane's lease lapsed ({exc})")
    return LeaseLost(f"{what}: the lane's lease moved to another owner ({exc})")


_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS: the key. ARGV: the value that says it is ours, TTL ms. 1 extended, 0 not ours.
RENEW_IF_HELD_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease, fence. ARGV: our lease value, our token, TTL ms. 1 renewed; 2 taken
# back: it had lapsed and the fence still holds our token, so nobody took the lane
# since (the same value is set again, so our lane's fenced writes pass again); 3 taken
# back on a new primary that lost the fence's latest increments (the fence is below
# our token: nobody can hold a token >= ours there): the fence is set to our token
# again, so tokens stay strictly increasing; 0 lost.
KEEP_LUA: Final = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if current then return 0 end
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[2])
if fence > token then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if fence < token then
  redis.call('SET', KEYS[2], ARGV[2])
  return 3
end
return 2
"""

# KEYS: the key. ARGV: the value that says it is ours. 1 deleted, 0 not ours.
RELEASE_IF_HELD_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as read from Redis."""

    token: int
    host_id: str

    @property
    def value(self) -> str:
        return f"{self.token}:{self.host_id}"


def parse_lease(raw: Any) -> Lease | None:
    """Read a lease value (``"<token>:<host>"``); None when absent or malformed."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    token, sep, host = text.partition(":")
    if not sep or not token.isdigit():
        return None
    return Lease(int(token), host)


class LeaseKept(IntEnum):
    """What :meth:`LeaseManager.keep_many` did with one lease."""

    LOST = 0
    """Another owner holds the lane, or took it since: stop the lane now."""
    RENEWED = 1
    """Still ours: extended to the full TTL."""
    RETAKEN = 2
    """It had lapsed and nobody took the lane since: set again, same token."""
    RESTORED = 3
    """Taken back on a new primary whose fence had lost our token: fence and lease set again.

    The fence's write must be confirmed on the replicas before the lane
    goes on under that token (``supervisor.lanes.lease_confirmed``).
    """


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """What a lane process needs to fence its writes."""

    instance_id: str
    token: int


class LeaseManager:
    """Acquire, renew and release lane leases for one host."""

    def __init__(
        self, redis: Redis, keys: Keys, host_id: str, *, ttl_ms: int = DEFAULT_LEASE_TTL_MS
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.host_id = host_id
        self.ttl_ms = ttl_ms
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(RENEW_IF_HELD_LUA)
        self._release = redis.register_script(RELEASE_IF_HELD_LUA)

    async def acquire(self, instance_id: str) -> Lease | None:
        """Take the lane if nobody holds it; returns the new lease or None."""
        token = await self._acquire(
            keys=[self.keys.lease(instance_id), self.keys.fence(instance_id)],
            args=[self.host_id, self.ttl_ms],
        )
        return Lease(int(token), self.host_id) if int(token) else None

    async def renew(self, instance_id: str, lease: Lease) -> bool:
        """Extend our lease; False means it is no longer ours (stop the lane now)."""
        return bool(
            await self._renew(keys=[self.keys.lease(instance_id)], args=[lease.value, self.ttl_ms])
        )

    async def renew_many(self, held: Sequence[tuple[str, Lease]]) -> list[bool | Exception]:
        """Renew many leases in one pipelined round trip (per node on a cluster).

        One result per lease, in order: True renewed, False no longer ours
        (stop that lane now), or the exception that call met. One round trip
        and one connection for any number of lanes: a host renewing 1,000
        leases must not need 1,000 connections or 1,000 sequential calls.
        The script is sent as ``EVAL`` (cached by the server under its SHA),
        which needs no ``SCRIPT LOAD`` on whichever node owns each lane.
        """
        if not held:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for instance_id, lease in held:
                pipe.eval(
                    RENEW_IF_HELD_LUA, 1, self.keys.lease(instance_id), lease.value, self.ttl_ms
                )
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return [reply if isinstance(reply, Exception) else bool(reply) for reply in replies]

    async def keep_many(self, held: Sequence[tuple[str, Lease]]) -> list[LeaseKept | Exception]:
        """:meth:`renew_many`, taking back each lease that lapsed while nobody took the lane.

        One pipelined round trip (:data:`KEEP_LUA` per lease). A lease whose
        key expired (Redis away longer than the TTL, restarted from its AOF
        without it) is set again to the *same* ``token:host`` only when the
        lane's fence counter still equals our token: no other host acquired
        the lane meanwhile, so fencing holds. A counter below our token (a new
        primary lost its increments) is set to our token again
        (:attr:`LeaseKept.RESTORED`). One result per lease, in order:
        a :class:`LeaseKept`, or the exception that call met.
        """
        if not held:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for instance_id, lease in held:
                pipe.eval(
                    KEEP_LUA,
                    2,
                    self.keys.lease(instance_id),
                    self.keys.fence(instance_id),
                    lease.value,
                    str(lease.token),
                    self.ttl_ms,
                )
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return [
            reply if isinstance(reply, Exception) else LeaseKept(int(reply)) for reply in replies
        ]

    async def release(self, instance_id: str, lease: Lease) -> bool:
        """Give the lane up at once (clean shutdown) so another host can take it."""
        return bool(await self._release(keys=[self.keys.lease(instance_id)], args=[lease.value]))

    async def read(self, instance_id: str) -> Lease | None:
        """The current holder of a lane, if any."""
        return parse_lease(await self.redis.get(self.keys.lease(instance_id)))


class FencedScript:
    """A Lua script on one lane's keys, fenced by the lane's token when it has one.

    Called like a redis-py script (``await script(keys=..., args=...)``); the
    lease key of the lane named by ``keys[0]`` and the token are prepended.
    A refused write raises :class:`LeaseLost`.
    """

    def __init__(self, redis: Redis, body: str, keys: Keys, token: int | None) -> None:
        self._script = redis.register_script(fenced(body) if token is not None else body)
        self._keys = keys
        self._token = token

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        if self._token is None:
            return await self._script(keys=keys, args=args)
        lease = self._keys.lease(_instance_of(keys[0]))
        try:
            return await self._script(keys=[lease, *keys], args=[str(self._token), *args])
        except ResponseError as exc:
            if is_fenced_error(exc):
                raise fenced_error(exc, "write refused") from None
            raise


def _instance_of(key: str) -> str:
    """The instance id inside a lane key's ``{ID}`` hash tag."""
    return key[key.index("{") + 1 : key.index("}")]
