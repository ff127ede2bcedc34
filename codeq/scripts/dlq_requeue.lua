--[[
  Give dead-lettered tasks another life: back to PENDING at their priority,
  attempts reset, claimable at once; the result record of their dead-lettering
  (and its callback, if still owed) removed.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tiers     zset of the tiers whose ready list may hold tasks
  KEYS[12]    tasks     hash id -> task record
  KEYS[13]    results   hash id -> result record
  KEYS[14]    done      zset id -> finished at (ms)
  KEYS[15]    dlq       zset of dead-lettered ids
  KEYS[16]    waiting   set while a claim long-polls this queue
  KEYS[17]    outbox    zset id -> when its callback is next due (ms)
  KEYS[18]    callbacks hash id -> callback record

  ARGV[1] limit     most tasks requeued by this call
  ARGV[2] channel   events channel
  ARGV[3] tenant
  ARGV[4] command
  then the ids to requeue; none: the oldest dead-lettered ones

  Returns {requeued, available} (available as in create.lua).
]]
-- @include common

local now = now_ms()
local requeued = 0
for _, id in ipairs(dlq_ids(KEYS[15], 5, tonumber(ARGV[1]))) do
  local t = redis.call('ZSCORE', KEYS[15], id) and load_task(KEYS[12], id)
  if t then
    clear_lease(t)
    t[STATUS], t[ATTEMPTS], t[ERROR] = PENDING, 0, nil
    t[VISIBLE], t[UPDATED] = now / 1000, now / 1000
    save_task(KEYS[12], id, t)
    redis.call('ZREM', KEYS[15], id)
    redis.call('ZREM', KEYS[14], id)
    redis.call('HDEL', KEYS[13], id)
    redis.call('ZREM', KEYS[17], id)
    redis.call('HDEL', KEYS[18], id)
    push_ready(KEYS[11], id, t, false)
    requeued = requeued + 1
  end
end
announce_ready(KEYS[16], ARGV[2], ARGV[3], ARGV[4], requeued)
return {requeued, became_available}
