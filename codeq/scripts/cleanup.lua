--[[
  Remove finished tasks whose retention has passed, with their results and
  idempotency keys. Touches only expired records.

  KEYS[1] tasks     hash of task records
  KEYS[2] results   hash of result records
  KEYS[3] done      zset id -> finished at (ms)
  KEYS[4] dlq       zset of dead-lettered ids
  KEYS[5] idem      hash idempotency key -> id
  KEYS[6] rwaiters  set of ids whose result is long-polled

  ARGV[1] retention ms
  ARGV[2] limit     most tasks removed per call

  Returns the removed ids; the caller then deletes their id -> command keys.
]]
-- @include common

local cutoff = now_ms() - tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local task = load_task(KEYS[1], id)
  if task and task.idempotencyKey and redis.call('HGET', KEYS[5], task.idempotencyKey) == id then
    redis.call('HDEL', KEYS[5], task.idempotencyKey)
  end
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('SREM', KEYS[6], id)
end
return ids
