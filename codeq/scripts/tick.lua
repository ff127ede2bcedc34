--[[
  Upkeep of one queue, run when the tenant's due index says it needs it:
  promote due delayed tasks; requeue (or dead-letter, error LEASE_EXPIRED)
  tasks whose lease expired; remove finished tasks whose retention passed,
  with their results and idempotency keys. Then report when the queue next
  needs upkeep, so the caller can put it back in the due index.

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
  KEYS[22]    payloads  hash id -> payload (JSON text)
  KEYS[23]    idem      hash idempotency key -> id

  ARGV[1] limit      most tasks promoted, leases reaped and tasks removed per call
  ARGV[2] policy     backoff policy (see nack.lua)
  ARGV[3] base       ms
  ARGV[4] max        ms
  ARGV[5] rand       in [0, 1)
  ARGV[6] channel    events channel
  ARGV[7] tenant
  ARGV[8] command
  ARGV[9] retention  ms finished tasks are kept

  Returns {promoted, requeued, deadLettered, removed, next, empty,
  callbacks, available}: next is the time (ms) of the queue's next upkeep, -1 when it
  needs none; empty is 1 when the queue holds no task at all; callbacks is 1
  when the outbox holds a callback due now (one written here, one due for
  another try, or one whose dispatcher's lease ended); available is 1 when
  the queue went from no ready task to some.
]]
-- @include common
-- @include finish
-- @include retry

local k = {tiers = KEYS[11], tasks = KEYS[12], inflight = KEYS[13], delayed = KEYS[14],
           results = KEYS[15], done = KEYS[16], dlq = KEYS[17], waiting = KEYS[18],
           rwaiters = KEYS[19], outbox = KEYS[20], callbacks = KEYS[21], payloads = KEYS[22],
           idem = KEYS[23]}
local a = {policy = ARGV[2], base = tonumber(ARGV[3]), cap = tonumber(ARGV[4]),
           rand = tonumber(ARGV[5]), channel = ARGV[6], tenant = ARGV[7], command = ARGV[8]}
local limit, retention = tonumber(ARGV[1]), tonumber(ARGV[9])

local now = now_ms()

local promoted = promote_due(k.delayed, k.tiers, k.tasks, now, limit)

local requeued, dead = 0, 0
local expired = redis.call('ZRANGEBYSCORE', k.inflight, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local t = load_task(k.tasks, id)
  if t and t[STATUS] == IN_PROGRESS then
    local outcome = retry(k, id, t, -1, 'lease expired', 'LEASE_EXPIRED', now, a)
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
  local t = load_task(k.tasks, id)
  if t and t[IDEM_KEY] and redis.call('HGET', k.idem, t[IDEM_KEY]) == id then
    redis.call('HDEL', k.idem, t[IDEM_KEY])
  end
  redis.call('HDEL', k.tasks, id)
  redis.call('HDEL', k.payloads, id)
  redis.call('HDEL', k.results, id)
  redis.call('ZREM', k.done, id)
  redis.call('ZREM', k.dlq, id)
  redis.call('SREM', k.rwaiters, id)
  redis.call('HDEL', k.callbacks, id)
  redis.call('ZREM', k.outbox, id)
end

announce_ready(k.waiting, a.channel, a.tenant, a.command, promoted)

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
local callback_at = first_score(k.outbox)
if delayed_at then sooner(delayed_at) end
if callback_at then sooner(callback_at) end
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
local callbacks_due = 0
if callback_at and callback_at <= now then
  callbacks_due = 1
end
return {promoted, requeued, dead, #removed, next_at, empty, callbacks_due, became_available}
