--[[
  Count one queue's tasks by state, and how long its oldest ready task has
  waited: O(tiers), never O(tasks). Within a tier tasks are FIFO, so the
  oldest ready task is the head of one of the (at most ten) tier lists.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tiers     zset of the tiers whose ready list may hold tasks
  KEYS[12]    delayed   zset of delayed ids
  KEYS[13]    inflight  zset id -> lease until (ms)
  KEYS[14]    dlq       zset of dead-lettered ids
  KEYS[15]    tasks     hash id -> task record

  Returns {ready of tier 9, ..., ready of tier 0, delayed, inProgress, dlq,
  oldest ready since (ms, -1 when none), now (ms)}.
]]
-- @include common

local now = now_ms()
local out, oldest = {}, -1
for i = 1, 10 do
  local n = redis.call('LLEN', KEYS[i])
  out[i] = n
  if n > 0 then
    local t = load_task(KEYS[15], redis.call('LINDEX', KEYS[i], 0))
    if t then
      local since = math.floor(t[VISIBLE] * 1000)
      if oldest < 0 or since < oldest then
        oldest = since
      end
    end
  end
end
out[11] = redis.call('ZCARD', KEYS[12])
out[12] = redis.call('ZCARD', KEYS[13])
out[13] = redis.call('ZCARD', KEYS[14])
out[14] = oldest
out[15] = now
return out
