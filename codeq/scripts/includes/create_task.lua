-- Create one task, or find the task its idempotency key already names.
-- k: tiers, delayed, tasks, payloads, idem. Needs common.lua.
-- Returns the id, the record, 1 when created (0 when found), the payload of a
-- task found (false otherwise), and 1 when the new task is ready at once.
local function create_task(k, ready, id, payload, priority, max_attempts, webhook, idem_key,
                           run_at, delay, now)
  if idem_key ~= '' then
    local existing = redis.call('HGET', k.idem, idem_key)
    if existing then
      local raw = redis.call('HGET', k.tasks, existing)
      if raw then
        return existing, raw, 0, redis.call('HGET', k.payloads, existing), 0
      end
    end
    redis.call('HSET', k.idem, idem_key, id)
  end
  local visible = now + delay
  if run_at ~= '' then
    visible = tonumber(run_at)
  end
  if visible < now then
    visible = now
  end
  local t = {PENDING, priority, 0, max_attempts, now / 1000, now / 1000, visible / 1000,
             nil, nil, nil, nil, webhook ~= '' and webhook or nil,
             idem_key ~= '' and idem_key or nil}
  local raw = save_task(k.tasks, id, t)
  redis.call('HSET', k.payloads, id, payload)
  if visible > now then
    redis.call('ZADD', k.delayed, visible, id)
    return id, raw, 1, false, 0
  end
  note_tier(k.tiers, priority, redis.call('RPUSH', ready, id))
  return id, raw, 1, false, 1
end
