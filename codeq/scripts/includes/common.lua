-- Shared helpers: store time, task records, wake-ups.
-- Task and result records are msgpack maps whose keys are the API's field
-- names; times are float seconds, zset scores integer milliseconds.

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

local function save_task(tasks, task)
  local raw = cmsgpack.pack(task)
  redis.call('HSET', tasks, task.id, raw)
  return raw
end

-- Ready list of a priority tier; ready keys are passed highest tier first.
local function ready_key(priority)
  return KEYS[10 - priority]
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
local function promote_due(delayed, tasks, now, limit)
  local promoted = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', delayed, id)
    local task = load_task(tasks, id)
    if task and task.status == 'PENDING' then
      redis.call('RPUSH', ready_key(task.priority), id)
      promoted = promoted + 1
    end
  end
  return promoted
end

local function clear_lease(task)
  task.workerId = nil
  task.leaseId = nil
  task.leaseUntil = nil
end
