--[[
  Take the queues of one tenant whose upkeep is due, each with a lease on
  its upkeep (like a task's): a process that dies mid-upkeep leaves its
  queues to be taken again once the lease ends. A queue whose upkeep another
  process holds stays due, for when that one is done.

  KEYS[1] due     zset command -> when its queue next needs upkeep (ms)
  KEYS[2] upkeep  zset command -> end of the lease on its running upkeep (ms)

  ARGV[1] limit   most queues taken
  ARGV[2] lease   ms

  Returns {leaseUntil, command...}: leaseUntil (ms) identifies this take
  to upkeep_done.lua.
]]
-- @include common

local limit, now = tonumber(ARGV[1]), now_ms()
local lease_until = now + tonumber(ARGV[2])

-- Upkeeps whose process died: due again now.
for _, command in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[2], command)
  redis.call('ZADD', KEYS[1], 'LT', now, command)
end

local out = {lease_until}
for _, command in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  if not redis.call('ZSCORE', KEYS[2], command) then
    redis.call('ZREM', KEYS[1], command)
    redis.call('ZADD', KEYS[2], lease_until, command)
    out[#out + 1] = command
  end
end
return out
