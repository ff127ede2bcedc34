--[[
  Give a delivery back: the task is claimable at once, at the head of its
  tier, and the delivery does not count as an attempt.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tiers     zset of the tiers whose ready list may hold tasks
  KEYS[12]    tasks     hash id -> task record
  KEYS[13]    inflight  zset id -> lease until (ms)
  KEYS[14]    waiting   set while a claim long-polls this queue

  ARGV[1] id
  ARGV[2] workerId
  ARGV[3] leaseId   '' when the caller gave none
  ARGV[4] channel   events channel
  ARGV[5] tenant
  ARGV[6] command

  Returns {0} or {code} (see lease.lua).
]]
-- @include common
-- @include lease

local id, now = ARGV[1], now_ms()
local t, code = check_lease(KEYS[12], KEYS[13], id, ARGV[2], ARGV[3], now)
if not t then
  return {code}
end
redis.call('ZREM', KEYS[13], id)
clear_lease(t)
t[STATUS], t[ATTEMPTS] = PENDING, t[ATTEMPTS] - 1
t[VISIBLE], t[UPDATED] = now / 1000, now / 1000
save_task(KEYS[12], id, t)
push_ready(KEYS[11], id, t, true)
announce_ready(KEYS[14], ARGV[4], ARGV[5], ARGV[6], 1)
return {0, became_available}
