--[[
  Refuse a delivery: requeue after a delay (the caller's, capped at the
  backoff maximum, or the backoff policy's), or dead-letter the task when it
  has used its last attempt.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tiers     zset of the tiers whose ready list may hold tasks
  KEYS[12]    tasks     hash id -> task record
  KEYS[13]    inflight  zset id -> lease until (ms)
  KEYS[14]    delayed   zset of delayed ids
  KEYS[15]    results   hash id -> result record
  KEYS[16]    done      zset id -> finished at (ms)
  KEYS[17]    dlq       zset of dead-lettered ids
  KEYS[18]    waiting   set while a claim long-polls this queue
  KEYS[19]    rwaiters  set of ids whose result is long-polled
  KEYS[20]    outbox    zset id -> when its callback is next due (ms)
  KEYS[21]    callbacks hash id -> callback record

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
  ARGV[12] command

  Returns {0, 'requeued', delay ms, visible at ms, available}, {0, 'dlq',
  callbacks written} or {code} (see lease.lua); available is 1 when the
  queue went from no ready task to this one.
]]
-- @include common
-- @include lease
-- @include finish
-- @include retry

local k = {tiers = KEYS[11], tasks = KEYS[12], inflight = KEYS[13], delayed = KEYS[14],
           results = KEYS[15], done = KEYS[16], dlq = KEYS[17], waiting = KEYS[18],
           rwaiters = KEYS[19], outbox = KEYS[20], callbacks = KEYS[21]}
local a = {policy = ARGV[6], base = tonumber(ARGV[7]), cap = tonumber(ARGV[8]),
           rand = tonumber(ARGV[9]), channel = ARGV[10], tenant = ARGV[11], command = ARGV[12]}

local id, now = ARGV[1], now_ms()
local t, code = check_lease(k.tasks, k.inflight, id, ARGV[2], ARGV[3], now)
if not t then
  return {code}
end
local delay = math.min(tonumber(ARGV[4]), a.cap)
local outcome, applied = retry(k, id, t, delay, ARGV[5], 'MAX_ATTEMPTS', now, a)
if outcome == 'dlq' then
  return {0, outcome, callbacks_owed}
end
return {0, outcome, applied, now + applied, became_available}
