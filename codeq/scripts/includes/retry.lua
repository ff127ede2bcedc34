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
local function retry(k, id, t, delay, reason, dead_error, now, a)
  if t[ATTEMPTS] >= t[MAX_ATTEMPTS] then
    finish(k, id, t, FAILED, '', dead_error, reason ~= '' and reason or dead_error, '', now,
           a.channel, a.tenant)
    redis.call('ZADD', k.dlq, now, id)
    return 'dlq', 0
  end
  if delay < 0 then
    delay = backoff_ms(a.policy, a.base, a.cap, t[ATTEMPTS], a.rand)
  end
  redis.call('ZREM', k.inflight, id)
  clear_lease(t)
  t[STATUS] = PENDING
  t[UPDATED] = now / 1000
  t[VISIBLE] = (now + delay) / 1000
  if reason ~= '' then
    t[ERROR] = reason
  end
  save_task(k.tasks, id, t)
  if delay > 0 then
    redis.call('ZADD', k.delayed, now + delay, id)
  else
    push_ready(k.tiers, id, t, false)
    announce_ready(k.waiting, a.channel, a.tenant, a.command, 1)
  end
  return 'requeued', delay
end
