-- Move a task to a terminal status and write its result record. Wakes any
-- long-polling result reader. task_error is what the task itself keeps (a
-- dead-lettered task keeps the last nack's reason; its result says why it
-- was dead-lettered). A task with a webhook gets its callback written to the
-- queue's outbox in the same step, due now: nothing else is needed for it
-- to be delivered (see callback_take.lua). Needs common.lua.

-- Callbacks written by this script call, for the caller to dispatch.
local callbacks_owed = 0

local function finish(k, id, t, status, result, err, task_error, artifacts, now, channel, tenant)
  t[STATUS] = status
  t[UPDATED] = now / 1000
  clear_lease(t)
  if task_error ~= '' then
    t[ERROR] = task_error
  end
  save_task(k.tasks, id, t)
  redis.call('ZREM', k.inflight, id)
  redis.call('ZADD', k.done, now, id)
  local raw = '\149' .. cmsgpack.pack(status, now / 1000, result ~= '' and result or nil,
                                      err ~= '' and err or nil,
                                      artifacts ~= '' and artifacts or nil)
  redis.call('HSET', k.results, id, raw)
  if t[WEBHOOK] then
    -- [status, attempts, lastError, deliveryId, taker]: pending, none yet.
    -- The delivery id names this terminal transition (a requeued task that
    -- finishes again owes a new callback).
    redis.call('HSET', k.callbacks, id, '\149' .. cmsgpack.pack(CB_PENDING, 0, nil,
                                                                 id .. '.' .. now, nil))
    redis.call('ZADD', k.outbox, now, id)
    callbacks_owed = callbacks_owed + 1
  end
  if redis.call('SREM', k.rwaiters, id) == 1 then
    redis.call('PUBLISH', channel, 'result|' .. tenant .. '|' .. id)
  end
  return raw
end
