--[[
  Extend the lease of an in-progress task (lease owner only).

  KEYS[1] tasks     hash id -> task record
  KEYS[2] inflight  zset id -> lease until (ms)

  ARGV[1] id
  ARGV[2] workerId
  ARGV[3] leaseId   '' when the caller gave none
  ARGV[4] extend    ms from now

  Returns {0, leaseUntil (ms)} or {code} (see lease.lua).
]]
-- @include common
-- @include lease

local id, now = ARGV[1], now_ms()
local t, code = check_lease(KEYS[1], KEYS[2], id, ARGV[2], ARGV[3], now)
if not t then
  return {code}
end
local lease_until = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], lease_until, id)
t[LEASE_UNTIL], t[UPDATED] = lease_until / 1000, now / 1000
save_task(KEYS[1], id, t)
return {0, lease_until}
