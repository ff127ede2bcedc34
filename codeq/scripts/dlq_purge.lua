--[[
  Remove dead-lettered tasks for good, with everything kept about them.

  KEYS[1] tasks     hash id -> task record
  KEYS[2] payloads  hash id -> payload
  KEYS[3] results   hash id -> result record
  KEYS[4] done      zset id -> finished at (ms)
  KEYS[5] dlq       zset of dead-lettered ids
  KEYS[6] idem      hash idempotency key -> id
  KEYS[7] outbox    zset id -> when its callback is next due (ms)
  KEYS[8] callbacks hash id -> callback record
  KEYS[9] rwaiters  set of ids whose result is long-polled

  ARGV[1] limit     most tasks removed by this call
  then the ids to remove; none: the oldest dead-lettered ones

  Returns how many were removed.
]]
-- @include common

local removed = 0
for _, id in ipairs(dlq_ids(KEYS[5], 2, tonumber(ARGV[1]))) do
  if redis.call('ZREM', KEYS[5], id) == 1 then
    local t = load_task(KEYS[1], id)
    if t and t[IDEM_KEY] and redis.call('HGET', KEYS[6], t[IDEM_KEY]) == id then
      redis.call('HDEL', KEYS[6], t[IDEM_KEY])
    end
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZREM', KEYS[7], id)
    redis.call('HDEL', KEYS[8], id)
    redis.call('SREM', KEYS[9], id)
    removed = removed + 1
  end
end
return removed
