--[[
  Report the best priority tier a claim on this queue would get, so a claim
  across several commands can start with the queue holding the most urgent
  work. Read-only.

  KEYS[1..10] ready    ready lists, tier 9 first
  KEYS[11]    delayed  zset of delayed ids

  Returns the highest non-empty tier (0..9); 0 when only due delayed tasks
  wait (their tiers are known only once promoted); -1 when nothing is ready.
]]
-- @include common

for tier = 1, 10 do
  if redis.call('LLEN', KEYS[tier]) > 0 then
    return 10 - tier
  end
end
if #redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now_ms(), 'LIMIT', 0, 1) > 0 then
  return 0
end
return -1
