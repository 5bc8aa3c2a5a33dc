"""The Lua of the transaction records: shared functions and :class:`TxStore`'s scripts.

One place for what a state move, an outcome, a command claim and the start
of a transaction mean in Redis, so that :mod:`multipair.store.transactions`
and the lane's one write script (``multipair.worker.writes``, which prepends
:data:`TX_LUA`) apply them alike. Every script names keys of one lane only
(one hash-tag slot; docs/broker-schema.md, "Redis Cluster").
"""

from __future__ import annotations

from typing import Final

__all__ = ["BEGIN", "CLAIM", "COMPLETE", "CREATE_IF_ABSENT", "REMEMBER", "TX_LUA", "UPDATE_STATE"]

# Lua functions shared by TxStore's scripts and the lane's write script
# (multipair.worker.writes), so a state move or an outcome means the same
# thing wherever it is applied.
#
# tx_move(tx, state, updated_at, request_message_id or '', allowed previous states)
#   -> 0 (no record) | 1, current state (move not allowed) | 2 (moved)
# tx_complete(tx, txs_open, pos_ref_id, result, outcome, updated_at, ttl seconds (0 = keep))
#   -> 0 (no record) | 1 (already completed: nothing written) | 2 (completed)
# tx_publish(stream, maxlen or '', field/value...): XADD, trimmed when maxlen is given.
# remember(cmds, cmds_at, command_id, reply, now_ms, prune_before_ms) -> pruned count
# claim(cmds, cmds_at, command_id, reply, now_ms, prune_before_ms)
#   -> the live prior claim of command_id (nothing written), or false once it is claimed
# pat_remember(payments, payments_at, bills, field, value, entry, now_ms, prune_before_ms)
#   -> pruned count: a pay-at-table payment stored (HSETNX) and indexed by its bill entry
#   (`<#bill_id>:<bill_id><field>`), unless its field is already there; then at most 256
#   entries stored before prune_before_ms are deleted from all three keys.
TX_LUA: Final = """
local function tx_move(tx, new, updated, msg_id, allowed)
  local cur = redis.call('HGET', tx, 'state')
  if not cur then return 0 end
  if cur ~= new then
    local ok = false
    for _, s in ipairs(allowed) do
      if s == cur then ok = true end
    end
    if not ok then return 1, cur end
  end
  redis.call('HSET', tx, 'state', new, 'updated_at', updated)
  if msg_id ~= '' then redis.call('HSET', tx, 'request_message_id', msg_id) end
  return 2
end

local function tx_complete(tx, open, pos_ref_id, result, outcome, updated, ttl)
  local cur = redis.call('HGET', tx, 'state')
  if not cur then return 0 end
  if cur == 'completed' then return 1 end
  redis.call('HSET', tx, 'state', 'completed', 'result', result, 'outcome', outcome,
             'updated_at', updated)
  redis.call('SREM', open, pos_ref_id)
  if tonumber(ttl) > 0 then redis.call('EXPIRE', tx, ttl) end
  return 2
end

local function tx_publish(stream, maxlen, ...)
  if maxlen == '' then
    redis.call('XADD', stream, '*', ...)
  else
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', ...)
  end
end

local function remember(cmds, cmds_at, command_id, reply, now_ms, prune_before_ms)
  redis.call('HSET', cmds, command_id, reply)
  redis.call('ZADD', cmds_at, now_ms, command_id)
  local old = redis.call('ZRANGEBYSCORE', cmds_at, '-inf', '(' .. prune_before_ms,
                         'LIMIT', 0, 256)
  if #old > 0 then
    redis.call('HDEL', cmds, unpack(old))
    redis.call('ZREM', cmds_at, unpack(old))
  end
  return #old
end

local function pat_remember(payments, at, bills, field, value, entry, now_ms, prune_before_ms)
  if redis.call('HSETNX', payments, field, value) == 1 then
    redis.call('ZADD', at, now_ms, entry)
    redis.call('ZADD', bills, 0, entry)
  end
  local old = redis.call('ZRANGEBYSCORE', at, '-inf', '(' .. prune_before_ms, 'LIMIT', 0, 256)
  for _, e in ipairs(old) do
    local n, rest = string.match(e, '^(%d+):(.*)$')
    if n then redis.call('HDEL', payments, string.sub(rest, tonumber(n) + 1)) end
  end
  if #old > 0 then
    redis.call('ZREM', at, unpack(old))
    redis.call('ZREM', bills, unpack(old))
  end
  return #old
end

local function claim(cmds, cmds_at, command_id, reply, now_ms, prune_before_ms)
  local prior = redis.call('HGET', cmds, command_id)
  if prior then
    local at = redis.call('ZSCORE', cmds_at, command_id)
    if at and tonumber(at) >= tonumber(prune_before_ms) then return prior end
  end
  remember(cmds, cmds_at, command_id, reply, now_ms, prune_before_ms)
  return false
end
"""

# KEYS: tx, txs_open, txs. ARGV: pos_ref_id, created_ms, prune_before_ms, open (1/0), pairs...
# Returns {created (1/0), HGETALL of the record as it is now}.
CREATE_IF_ABSENT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[4] == '1' then redis.call('SADD', KEYS[2], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: tx. ARGV: new state, updated_at, request_message_id or '', allowed previous states...
# Returns {0, ''} when absent, {1, current} when not allowed, {2, HGETALL} when done.
UPDATE_STATE: Final = (
    TX_LUA
    + """
local code, cur = tx_move(KEYS[1], ARGV[1], ARGV[2], ARGV[3], {unpack(ARGV, 4)})
if code == 0 then return {0, ''} end
if code == 1 then return {1, cur} end
return {2, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: tx, txs_open[, events]. ARGV: result, outcome, updated_at, pos_ref_id, ttl seconds
# (0 = keep), maxlen ('' = untrimmed), then the event entry's field/value pairs.
# Returns {0, ''} when absent, {1, HGETALL} when already completed (nothing published),
# {2, HGETALL} when done (and the event appended to KEYS[3] when given).
COMPLETE: Final = (
    TX_LUA
    + """
local code = tx_complete(KEYS[1], KEYS[2], ARGV[4], ARGV[1], ARGV[2], ARGV[3], ARGV[5])
if code == 0 then return {0, ''} end
if code == 1 then return {1, redis.call('HGETALL', KEYS[1])} end
if #KEYS == 3 then tx_publish(KEYS[3], ARGV[6], unpack(ARGV, 7)) end
return {2, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: cmds, cmds_at. ARGV: command_id, reply, now_ms, prune_before_ms. Returns pruned count.
REMEMBER: Final = (
    TX_LUA
    + """
return remember(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

# KEYS: cmds, cmds_at. ARGV: command_id, claim, now_ms, prune_before_ms.
# Returns the live prior claim (nothing written), or nil once the command_id is claimed.
CLAIM: Final = (
    TX_LUA
    + """
return claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

# The start of a new transaction, in one step: claim the command_id, create the
# record, publish the event that accepts the command.
# KEYS: cmds, cmds_at, tx, txs_open, txs, events.
# ARGV: command_id, claim, now_ms, claims_prune_before_ms, pos_ref_id, created_ms,
#       index_prune_before_ms, maxlen ('' = untrimmed), n (count of event args),
#       the event's n field/value args, then the record's field/value pairs.
# Returns {0, prior claim} when the command_id holds a live claim (nothing written),
# {1, HGETALL} when the record already existed (claimed; no record, no event written),
# {2} when the record was created and the event published (n = 0: no event).
BEGIN: Final = (
    TX_LUA
    + """
local prior = claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if prior then return {0, prior} end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {1, redis.call('HGETALL', KEYS[3])}
end
local n = tonumber(ARGV[9])
redis.call('HSET', KEYS[3], unpack(ARGV, 10 + n))
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[7])
if n > 0 then tx_publish(KEYS[6], ARGV[8], unpack(ARGV, 10, 9 + n)) end
return {2}
"""
)
