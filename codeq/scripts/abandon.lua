--[[
  Give a delivery back: the task is claimable at once, at the head of its
  tier, and the delivery does not count as an attempt.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tasks     hash of task records
  KEYS[12]    inflight  zset id -> lease until (ms)
  KEYS[13]    waiting   set while a claim long-polls this queue

  ARGV[1] id
  ARGV[2] workerId
  ARGV[3] leaseId   '' when the caller gave none
  ARGV[4] channel   events channel
  ARGV[5] tenant

  Returns {0} or {code} (see lease.lua).
]]
-- @include common
-- @include lease

local now = now_ms()
local task, code = check_lease(KEYS[11], KEYS[12], ARGV[1], ARGV[2], ARGV[3], now)
if not task then
  return {code}
end
redis.call('ZREM', KEYS[12], task.id)
clear_lease(task)
task.status = 'PENDING'
task.attempts = task.attempts - 1
task.visibleAt = now / 1000
task.updatedAt = now / 1000
save_task(KEYS[11], task)
redis.call('LPUSH', ready_key(task.priority), task.id)
announce_ready(KEYS[13], ARGV[4], ARGV[5], task.command, 1)
return {0}
