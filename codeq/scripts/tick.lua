--[[
  Background upkeep of one queue: promote due delayed tasks, and requeue
  (or dead-letter, error LEASE_EXPIRED) tasks whose lease expired. Every
  server process calls it; with nothing due it only reads, so it writes
  nothing to the append-only file, and the first caller leaves nothing for
  the others.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tasks     hash of task records
  KEYS[12]    inflight  zset id -> lease until (ms)
  KEYS[13]    delayed   zset of delayed ids
  KEYS[14]    results   hash of result records
  KEYS[15]    done      zset id -> finished at (ms)
  KEYS[16]    dlq       zset of dead-lettered ids
  KEYS[17]    waiting   set while a claim long-polls this queue
  KEYS[18]    rwaiters  set of ids whose result is long-polled

  ARGV[1] limit     most tasks promoted, and most leases reaped, per call
  ARGV[2] policy    backoff policy (see nack.lua)
  ARGV[3] base      ms
  ARGV[4] max       ms
  ARGV[5] rand      in [0, 1)
  ARGV[6] channel   events channel
  ARGV[7] tenant
  ARGV[8] command

  Returns {promoted, requeued, deadLettered}.
]]
-- @include common
-- @include finish
-- @include retry

local k = {tasks = KEYS[11], inflight = KEYS[12], delayed = KEYS[13], results = KEYS[14],
           done = KEYS[15], dlq = KEYS[16], waiting = KEYS[17], rwaiters = KEYS[18]}
local a = {policy = ARGV[2], base = tonumber(ARGV[3]), cap = tonumber(ARGV[4]),
           rand = tonumber(ARGV[5]), channel = ARGV[6], tenant = ARGV[7]}
local limit, command = tonumber(ARGV[1]), ARGV[8]

local now = now_ms()

local promoted = promote_due(k.delayed, k.tasks, now, limit)

local requeued, dead = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k.inflight, '-inf', now, 'LIMIT', 0, limit)) do
  local task = load_task(k.tasks, id)
  if task and task.status == 'IN_PROGRESS' then
    local outcome = retry(k, task, -1, 'lease expired', 'LEASE_EXPIRED', now, a)
    if outcome == 'dlq' then
      dead = dead + 1
    else
      requeued = requeued + 1
    end
  else
    redis.call('ZREM', k.inflight, id)
  end
end

announce_ready(k.waiting, a.channel, a.tenant, command, promoted)
return {promoted, requeued, dead}
