--[[
  Submit the terminal result of an in-progress task (lease owner only).

  KEYS[1] tasks     hash of task records
  KEYS[2] inflight  zset id -> lease until (ms)
  KEYS[3] results   hash of result records
  KEYS[4] done      zset id -> finished at (ms)
  KEYS[5] rwaiters  set of ids whose result is long-polled

  ARGV[1] id
  ARGV[2] workerId
  ARGV[3] leaseId    '' when the caller gave none
  ARGV[4] status     COMPLETED | FAILED
  ARGV[5] result     JSON text, '' for none
  ARGV[6] error      '' for none
  ARGV[7] artifacts  JSON text, '' for none
  ARGV[8] channel    events channel
  ARGV[9] tenant

  Returns {0, result record} or {code} (see lease.lua).
]]
-- @include common
-- @include lease
-- @include finish

local k = {tasks = KEYS[1], inflight = KEYS[2], results = KEYS[3], done = KEYS[4],
           rwaiters = KEYS[5]}
local now = now_ms()
local task, code = check_lease(k.tasks, k.inflight, ARGV[1], ARGV[2], ARGV[3], now)
if not task then
  return {code}
end
return {0, finish(k, task, ARGV[4], ARGV[5], ARGV[6], ARGV[6], ARGV[7], now, ARGV[8], ARGV[9])}
