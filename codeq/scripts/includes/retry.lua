-- Give a delivery back after a nack or an expired lease: requeue it after a
-- backoff delay, or dead-letter it once attempts reach maxAttempts.
-- Needs common.lua and finish.lua.

-- Backoff policies; attempts >= 1, rand in [0, 1) supplied by the caller.
local function backoff_ms(policy, base, cap, attempts, rand)
  local delay
  if policy == 'fixed' then
    delay = base
  elseif policy == 'linear' then
    delay = base * attempts
  else
    -- Bound the exponent so 2^n stays finite for any attempt count.
    delay = base * 2 ^ math.min(attempts - 1, 60)
    if delay > cap then
      delay = cap
    end
    if policy == 'equal_jitter' then
      delay = delay / 2 + rand * delay / 2
    elseif policy == 'full_jitter' then
      delay = rand * delay
    end
  end
  if delay > cap then
    delay = cap
  end
  return math.floor(delay)
end

-- Returns 'dlq', or 'requeued' and the delay in ms. delay < 0: use the policy.
local function retry(k, task, delay, reason, dead_error, now, a)
  if task.attempts >= task.maxAttempts then
    finish(k, task, 'FAILED', '', dead_error, reason ~= '' and reason or dead_error, '', now,
           a.channel, a.tenant)
    redis.call('ZADD', k.dlq, now, task.id)
    return 'dlq', 0
  end
  if delay < 0 then
    delay = backoff_ms(a.policy, a.base, a.cap, task.attempts, a.rand)
  end
  redis.call('ZREM', k.inflight, task.id)
  clear_lease(task)
  task.status = 'PENDING'
  task.updatedAt = now / 1000
  task.visibleAt = (now + delay) / 1000
  if reason ~= '' then
    task.error = reason
  end
  save_task(k.tasks, task)
  if delay > 0 then
    redis.call('ZADD', k.delayed, now + delay, task.id)
  else
    redis.call('RPUSH', ready_key(task.priority), task.id)
    announce_ready(k.waiting, a.channel, a.tenant, task.command, 1)
  end
  return 'requeued', delay
end
