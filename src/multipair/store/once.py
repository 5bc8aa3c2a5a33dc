"""Lane writes applied once, however often they are sent (issue 13).

A lane sends a write again when it never got the reply: Redis went away in
the middle of the call. Redis may have applied it before the connection
died, so sending it again must not apply it twice (a second event, a second
``HINCRBY``, a second ``command_accepted``). So such a write carries a
*write id*, unique to the lane process (``<nonce>:<sequence>``), and its
script is wrapped by :func:`once`:

- the id has a stored reply: return that reply, apply nothing;
- otherwise run the script, store its reply under the id in the lane's
  ``mp:lane:{ID}:writes`` hash (same hash tag: one slot, legal on a
  cluster), return it.

Still one round trip. The hash stays small: each write also carries the ids
whose reply has arrived since the last one (they are never sent again) and
deletes them, and the writes of a process until its first reply arrives
delete every id of earlier processes (dead, or fenced out by now). What
stays is the handful of writes in flight.

Compose it inside the fence (``fenced(once(body))``): a stale owner is
refused by the fence, never answered from the log. A fence refusal stores
nothing, so a write refused as "lapsed" and sent again once its lease is
taken back runs then, once.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["WriteLog", "WriteTicket", "once"]

# The caller appends to KEYS the log hash, and to ARGV: the ids to forget, their
# count, our own id prefix ('' once a reply of this process has arrived: nothing
# of earlier processes is left then), and this write's id. Popped from the end,
# so the body's own KEYS and ARGV are as before.
_PROLOGUE: Final = """
local once_key = table.remove(KEYS)
local once_id = table.remove(ARGV)
local once_mine = table.remove(ARGV)
local once_n = tonumber(table.remove(ARGV))
for _ = 1, once_n do redis.call('HDEL', once_key, table.remove(ARGV)) end
if once_mine ~= '' then
  for _, f in ipairs(redis.call('HKEYS', once_key)) do
    if string.sub(f, 1, #once_mine) ~= once_mine then redis.call('HDEL', once_key, f) end
  end
end
local once_prior = redis.call('HGET', once_key, once_id)
if once_prior then return cjson.decode(once_prior) end
local function once_body()
"""

_EPILOGUE: Final = """
end
local once_reply = once_body()
redis.call('HSET', once_key, once_id, cjson.encode(once_reply))
return once_reply
"""


def once(body: str) -> str:
    """``body`` (a script returning an array of numbers and strings), applied once per id."""
    return _PROLOGUE + body + _EPILOGUE


_Run = Callable[[list[Any], list[Any]], Awaitable[Any]]
"""Runs the wrapped script with these KEYS and ARGV (fence and all): ``run(keys, args)``."""


@dataclass(frozen=True, slots=True)
class WriteTicket:
    """One write's id: the same ticket on every try means the same write."""

    log: WriteLog
    write_id: str

    async def call(self, run: _Run, keys: list[Any], args: list[Any]) -> Any:
        """Run a script wrapped by :func:`once` for this write (see :meth:`WriteLog.call`)."""
        return await self.log.call(run, keys, args, self.write_id)


class WriteLog:
    """The write ids of one lane process, and which of their replies arrived."""

    def __init__(self, key: str) -> None:
        self.key = key
        """The lane's ``writes`` hash (``Keys.writes``)."""
        self.nonce = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._sequence = itertools.count(1)
        self._landed: list[str] = []
        self._any_landed = False

    def ticket(self) -> WriteTicket:
        """A new write id; keep it for every try of that write."""
        return WriteTicket(self, f"{self.nonce}:{next(self._sequence)}")

    async def call(self, run: _Run, keys: list[Any], args: list[Any], write_id: str) -> Any:
        """Call ``run`` with the log's key and arguments appended; note the reply arrived."""
        # Replies that arrived: those writes are never sent again (never this one's id).
        forget = [i for i in self._landed if i != write_id]
        mine = "" if self._any_landed else f"{self.nonce}:"
        reply = await run([*keys, self.key], [*args, *forget, str(len(forget)), mine, write_id])
        self._landed = [i for i in self._landed if i not in forget]
        self._landed.append(write_id)
        self._any_landed = True
        return reply
