--[[
  Refuse a delivery: requeue after a delay (the caller's, capped at the
  backoff maximum, or the backoff policy's), or dead-letter the task when it
  has used its last attempt.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tasks     hash of task records
  KEYS[12]    inflight  zset id -> lease until (ms)
  KEYS[13]    delayed   zset of delayed ids
  KEYS[14]    results   hash of result records
  KEYS[15]    done      zset id -> finished at (ms)
  KEYS[16]    dlq       zset of dead-lettered ids
  KEYS[17]    waiting   set while a claim long-polls this queue
  KEYS[18]    rwaiters  set of ids whose result is long-polled

  ARGV[1]  id
  ARGV[2]  workerId
  ARGV[3]  leaseId   '' when the caller gave none
  ARGV[4]  delay     ms asked by the caller, -1 for the policy's
  ARGV[5]  reason    '' for none
  ARGV[6]  policy    fixed | linear | exponential | equal_jitter | full_jitter
  ARGV[7]  base      ms
  ARGV[8]  max       ms
  ARGV[9]  rand      in [0, 1), for the jittered policies
  ARGV[10] channel   events channel
  ARGV[11] tenant

  Returns {0, 'requeued', delay ms, visible at ms}, {0, 'dlq'} or {code} (see
  lease.lua).
]]
-- @include common
-- @include lease
-- @include finish
-- @include retry

local k = {tasks = KEYS[11], inflight = KEYS[12], delayed = KEYS[13], results = KEYS[14],
           done = KEYS[15], dlq = KEYS[16], waiting = KEYS[17], rwaiters = KEYS[18]}
local a = {policy = ARGV[6], base = tonumber(ARGV[7]), cap = tonumber(ARGV[8]),
           rand = tonumber(ARGV[9]), channel = ARGV[10], tenant = ARGV[11]}

local now = now_ms()
local task, code = check_lease(k.tasks, k.inflight, ARGV[1], ARGV[2], ARGV[3], now)
if not task then
  return {code}
end
local delay = tonumber(ARGV[4])
if delay > a.cap then
  delay = a.cap
end
local outcome, applied = retry(k, task, delay, ARGV[5], 'MAX_ATTEMPTS', now, a)
if outcome == 'dlq' then
  return {0, outcome}
end
return {0, outcome, applied, now + applied}
