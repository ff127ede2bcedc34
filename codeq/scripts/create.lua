--[[
  Create a task: ready at once, or delayed until its visible time.

  KEYS[1]  ready      ready list of the task's priority tier
  KEYS[2]  delayed    zset of delayed ids
  KEYS[3]  tasks      hash of task records
  KEYS[4]  idem       hash idempotency key -> id
  KEYS[5]  waiting    set while a claim long-polls this queue

  ARGV[1]  id              new task id
  ARGV[2]  command
  ARGV[3]  payload         JSON text
  ARGV[4]  priority        0..9, already clamped
  ARGV[5]  maxAttempts
  ARGV[6]  webhook         '' for none
  ARGV[7]  idempotencyKey  '' for none
  ARGV[8]  tenant
  ARGV[9]  runAt           ms since the epoch, '' for none
  ARGV[10] delay           ms, used when runAt is ''
  ARGV[11] channel         events channel

  Returns {0, record, created}: created is 0 when the idempotency key
  matched an existing task, whose record is returned instead.
]]
-- @include common

local id, command, idem_key, tenant = ARGV[1], ARGV[2], ARGV[7], ARGV[8]

if idem_key ~= '' then
  local existing = redis.call('HGET', KEYS[4], idem_key)
  if existing then
    local raw = redis.call('HGET', KEYS[3], existing)
    if raw then
      return {0, raw, 0}
    end
  end
  redis.call('HSET', KEYS[4], idem_key, id)
end

local now = now_ms()
local visible = now + tonumber(ARGV[10])
if ARGV[9] ~= '' then
  visible = tonumber(ARGV[9])
end
if visible < now then
  visible = now
end

local task = {
  id = id,
  command = command,
  payload = ARGV[3],
  priority = tonumber(ARGV[4]),
  status = 'PENDING',
  attempts = 0,
  maxAttempts = tonumber(ARGV[5]),
  tenantId = tenant,
  createdAt = now / 1000,
  updatedAt = now / 1000,
  visibleAt = visible / 1000,
}
if ARGV[6] ~= '' then
  task.webhook = ARGV[6]
end
if idem_key ~= '' then
  task.idempotencyKey = idem_key
end
local raw = save_task(KEYS[3], task)

if visible > now then
  redis.call('ZADD', KEYS[2], visible, id)
else
  redis.call('RPUSH', KEYS[1], id)
  announce_ready(KEYS[5], ARGV[11], tenant, command, 1)
end
return {0, raw, 1}
