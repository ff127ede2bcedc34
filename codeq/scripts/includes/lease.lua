-- Load a task for a lease-holder operation (heartbeat, abandon, nack, result).
-- Returns the task, or nil and a status code: 1 unknown task, 2 not in
-- progress, 3 not the lease owner, 4 stale lease token, 5 lease expired.
local function check_lease(tasks, inflight, id, worker, lease, now)
  local t = load_task(tasks, id)
  if not t then
    return nil, 1
  end
  if t[STATUS] ~= IN_PROGRESS then
    return nil, 2
  end
  if t[WORKER] ~= worker then
    return nil, 3
  end
  if lease ~= '' and t[LEASE] ~= lease then
    return nil, 4
  end
  local lease_until = redis.call('ZSCORE', inflight, id)
  if not lease_until or tonumber(lease_until) <= now then
    return nil, 5
  end
  return t
end
