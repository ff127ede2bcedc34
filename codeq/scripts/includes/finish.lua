-- Move a task to a terminal status and write its result record. Wakes any
-- long-polling result reader. task_error is what the task itself keeps (a
-- dead-lettered task keeps the last nack's reason; its result says why it
-- was dead-lettered). Needs common.lua.
local function finish(k, task, status, result, err, task_error, artifacts, now, channel, tenant)
  task.status = status
  task.updatedAt = now / 1000
  clear_lease(task)
  if task_error ~= '' then
    task.error = task_error
  end
  save_task(k.tasks, task)
  redis.call('ZREM', k.inflight, task.id)
  redis.call('ZADD', k.done, now, task.id)
  local record = {taskId = task.id, status = status, completedAt = now / 1000}
  if result ~= '' then
    record.result = result
  end
  if err ~= '' then
    record.error = err
  end
  if artifacts ~= '' then
    record.artifacts = artifacts
  end
  local raw = cmsgpack.pack(record)
  redis.call('HSET', k.results, task.id, raw)
  if redis.call('SREM', k.rwaiters, task.id) == 1 then
    redis.call('PUBLISH', channel, 'result|' .. tenant .. '|' .. task.id)
  end
  return raw
end
