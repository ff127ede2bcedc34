--[[
  Report the best priority tier a claim on this queue would get, so a claim
  across several commands can start with the queue holding the most urgent
  work; when nothing is ready and the caller will long-poll, mark the queue
  long-polled (as an empty claim would).

  KEYS[1] tiers    zset of the tiers whose ready list may hold tasks
  KEYS[2] delayed  zset of delayed ids
  KEYS[3] waiting  set while a claim long-polls this queue

  ARGV[1] wait     ms the caller will long-poll when nothing is ready; 0 none

  Returns the highest tier that may hold tasks (0..9); 0 when only due
  delayed tasks wait (their tiers are known only once promoted); -1 when
  nothing is ready.
]]
-- @include common

local best = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if best then
  return tonumber(best)
end
if #redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms(), 'LIMIT', 0, 1) > 0 then
  return 0
end
local wait_ms = tonumber(ARGV[1])
if wait_ms > 0 and redis.call('PTTL', KEYS[3]) < wait_ms then
  redis.call('SET', KEYS[3], '1', 'PX', wait_ms)
end
return -1
