-- Shared helpers: store time, task records, ready tiers, wake-ups.
--
-- A task record is a msgpack array, no field names, of the task's small
-- fields; its payload lives apart (the payloads hash), so that claiming,
-- heartbeating, requeueing or finishing a task never reads or rewrites it:
--   [status, priority, attempts, maxAttempts, createdAt, updatedAt,
--    visibleAt, workerId, leaseId, leaseUntil, error, webhook, idempotencyKey]
-- Times are float seconds, zset scores integer milliseconds; absent fields
-- are nil. A result record: [status, completedAt, result, error, artifacts].

local STATUS, PRIORITY, ATTEMPTS, MAX_ATTEMPTS, CREATED, UPDATED, VISIBLE = 1, 2, 3, 4, 5, 6, 7
local WORKER, LEASE, LEASE_UNTIL, ERROR, WEBHOOK, IDEM_KEY = 8, 9, 10, 11, 12, 13
local PENDING, IN_PROGRESS, COMPLETED, FAILED = 0, 1, 2, 3
-- A callback record (callbacks hash): [status, attempts, lastError,
-- deliveryId, taker]; taker is the token of the dispatcher holding it.
local CB_PENDING, CB_DELIVERED, CB_FAILED = 0, 1, 2

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_task(tasks, id)
  local raw = redis.call('HGET', tasks, id)
  if not raw then
    return nil
  end
  return cmsgpack.unpack(raw)
end

-- cmsgpack packs each argument, nil included, so a fixed-length array with
-- holes is its header followed by the packed fields.
local function pack_task(t)
  return '\157' .. cmsgpack.pack(t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10],
                                 t[11], t[12], t[13])
end

local function save_task(tasks, id, t)
  local raw = pack_task(t)
  redis.call('HSET', tasks, id, raw)
  return raw
end

-- Ready list of a priority tier; ready keys are passed highest tier first.
local function ready_key(priority)
  return KEYS[10 - priority]
end

-- 1 once this script call has put a ready task into a queue that had none,
-- for availability webhooks (the caller is told, see codeq/push).
local became_available = 0

-- The tiers zset holds every tier whose list may be non-empty (score -tier,
-- so the highest comes first): a list that gets its first element enters it.
-- A claim that finds a tier empty removes it, so once a queue has been found
-- empty its zset is too: a first element in the only tier listed is a queue
-- going from empty to available.
local function note_tier(tiers, priority, length)
  if length == 1 then
    redis.call('ZADD', tiers, -priority, priority)
    if redis.call('ZCARD', tiers) == 1 then
      became_available = 1
    end
  end
end

-- Make a task claimable: at the tail of its tier, or at the head.
local function push_ready(tiers, id, t, head)
  local length = redis.call(head and 'LPUSH' or 'RPUSH', ready_key(t[PRIORITY]), id)
  note_tier(tiers, t[PRIORITY], length)
end

-- Tell long-polling claimers (in any server process) that n tasks are ready,
-- but only while one is waiting: the waiting key lives as long as the longest
-- poll, so a ready task published after a claimer looked is never missed.
local function announce_ready(waiting, channel, tenant, command, n)
  if n > 0 and redis.call('EXISTS', waiting) == 1 then
    redis.call('PUBLISH', channel, 'ready|' .. tenant .. '|' .. command .. '|' .. n)
  end
end

-- Move up to `limit` due delayed tasks to their ready lists; return how many.
local function promote_due(delayed, tiers, tasks, now, limit)
  local promoted = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', delayed, id)
    local t = load_task(tasks, id)
    if t and t[STATUS] == PENDING then
      push_ready(tiers, id, t, false)
      promoted = promoted + 1
    end
  end
  return promoted
end

-- The ids an admin call acts on: ARGV[first] and on, up to limit, or when
-- none are given the oldest `limit` of the dead-letter zset.
local function dlq_ids(dlq, first, limit)
  if #ARGV < first then
    return redis.call('ZRANGE', dlq, 0, limit - 1)
  end
  local ids = {}
  for i = first, math.min(#ARGV, first + limit - 1) do
    ids[#ids + 1] = ARGV[i]
  end
  return ids
end

local function clear_lease(t)
  t[WORKER], t[LEASE], t[LEASE_UNTIL] = nil, nil, nil
end
