--[[
  Take the queues of one due-index shard whose upkeep is due, each with a
  lease on its upkeep (like a task's): a process that dies mid-upkeep leaves
  its queues to be taken again once the lease ends. A queue whose upkeep
  another process holds stays due, for when that one is done, and is passed
  over without counting against the limit.

  KEYS[1] due     zset queue -> when it next needs upkeep (ms)
  KEYS[2] upkeep  zset queue -> end of the lease on its running upkeep (ms)

  ARGV[1] limit   most queues taken (and 10 times as many due ones looked at)
  ARGV[2] lease   ms

  Returns {leaseUntil, queue...}: leaseUntil (ms) identifies this take to
  upkeep_done.lua.
]]
-- @include common

local limit, now = tonumber(ARGV[1]), now_ms()
local lease_until = now + tonumber(ARGV[2])

-- Upkeeps whose process died: due again now.
for _, queue in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[2], queue)
  redis.call('ZADD', KEYS[1], 'LT', now, queue)
end

local out = {lease_until}
local offset = 0
while #out <= limit and offset < 10 * limit do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', offset, limit)
  if #due == 0 then
    break
  end
  for _, queue in ipairs(due) do
    if #out > limit then
      break
    end
    if redis.call('ZSCORE', KEYS[2], queue) then
      offset = offset + 1  -- held: it stays, so the next page starts past it
    else
      redis.call('ZREM', KEYS[1], queue)
      redis.call('ZADD', KEYS[2], lease_until, queue)
      out[#out + 1] = queue
    end
  end
end
return out
