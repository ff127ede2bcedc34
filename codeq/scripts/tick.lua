--[[
  Upkeep of one queue, run when the tenant's due index says it needs it:
  promote due delayed tasks; requeue (or dead-letter, error LEASE_EXPIRED)
  tasks whose lease expired; remove finished tasks whose retention passed,
  with their results and idempotency keys. Then report when the queue next
  needs upkeep, so the caller can put it back in the due index.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tasks     hash of task records
  KEYS[12]    inflight  zset id -> lease until (ms)
  KEYS[13]    delayed   zset of delayed ids
  KEYS[14]    results   hash of result records
  KEYS[15]    done      zset id -> finished at (ms)
  KEYS[16]    dlq       zset of dead-lettered ids
  KEYS[17]    waiting   set while a claim long-polls this queue
  KEYS[18]    rwaiters  set of ids whose result is long-polled
  KEYS[19]    idem      hash idempotency key -> id

  ARGV[1] limit      most tasks promoted, leases reaped and tasks removed per call
  ARGV[2] policy     backoff policy (see nack.lua)
  ARGV[3] base       ms
  ARGV[4] max        ms
  ARGV[5] rand       in [0, 1)
  ARGV[6] channel    events channel
  ARGV[7] tenant
  ARGV[8] command
  ARGV[9] retention  ms finished tasks are kept

  Returns {promoted, requeued, deadLettered, next, empty, removed id...}:
  next is the time (ms) of the queue's next upkeep, -1 when it needs none;
  empty is 1 when the queue holds no task at all. The caller deletes the
  removed ids' id -> command keys.
]]
-- @include common
-- @include finish
-- @include retry

local k = {tasks = KEYS[11], inflight = KEYS[12], delayed = KEYS[13], results = KEYS[14],
           done = KEYS[15], dlq = KEYS[16], waiting = KEYS[17], rwaiters = KEYS[18],
           idem = KEYS[19]}
local a = {policy = ARGV[2], base = tonumber(ARGV[3]), cap = tonumber(ARGV[4]),
           rand = tonumber(ARGV[5]), channel = ARGV[6], tenant = ARGV[7]}
local limit, command, retention = tonumber(ARGV[1]), ARGV[8], tonumber(ARGV[9])

local now = now_ms()

local promoted = promote_due(k.delayed, k.tasks, now, limit)

local requeued, dead = 0, 0
local expired = redis.call('ZRANGEBYSCORE', k.inflight, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
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

local removed = redis.call('ZRANGEBYSCORE', k.done, '-inf', now - retention, 'LIMIT', 0, limit)
for _, id in ipairs(removed) do
  local task = load_task(k.tasks, id)
  if task and task.idempotencyKey and redis.call('HGET', k.idem, task.idempotencyKey) == id then
    redis.call('HDEL', k.idem, task.idempotencyKey)
  end
  redis.call('HDEL', k.tasks, id)
  redis.call('HDEL', k.results, id)
  redis.call('ZREM', k.done, id)
  redis.call('ZREM', k.dlq, id)
  redis.call('SREM', k.rwaiters, id)
end

announce_ready(k.waiting, a.channel, a.tenant, command, promoted)

-- The next upkeep: the first delayed task or lease to fall due, the first
-- retention to pass, and, while tasks are in flight, at most a retention
-- ahead (one may finish any moment). Work left by a limit is due now.
local next_at = -1
local function sooner(t)
  if next_at < 0 or t < next_at then
    next_at = t
  end
end
local function first_score(zset)
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2])
end
local delayed_at, lease_at, done_at = first_score(k.delayed), first_score(k.inflight),
                                      first_score(k.done)
if delayed_at then sooner(delayed_at) end
if lease_at then
  sooner(lease_at)
  sooner(now + retention)
end
if done_at then sooner(done_at + retention) end
if #expired == limit or #removed == limit then sooner(now) end

local empty = 0
if redis.call('HLEN', k.tasks) == 0 then
  empty = 1
end
local out = {promoted, requeued, dead, next_at, empty}
for _, id in ipairs(removed) do
  out[#out + 1] = id
end
return out
