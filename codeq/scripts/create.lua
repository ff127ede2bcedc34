--[[
  Create a task: ready at once, or delayed until its visible time.

  KEYS[1] ready     ready list of the task's priority tier
  KEYS[2] tiers     zset of the tiers whose ready list may hold tasks
  KEYS[3] delayed   zset of delayed ids
  KEYS[4] tasks     hash id -> task record
  KEYS[5] payloads  hash id -> payload (JSON text)
  KEYS[6] idem      hash idempotency key -> id
  KEYS[7] waiting   set while a claim long-polls this queue

  ARGV[1]  id              new task id
  ARGV[2]  payload         JSON text
  ARGV[3]  priority        0..9, already clamped
  ARGV[4]  maxAttempts
  ARGV[5]  webhook         '' for none
  ARGV[6]  idempotencyKey  '' for none
  ARGV[7]  runAt           ms since the epoch, '' for none
  ARGV[8]  delay           ms, used when runAt is ''
  ARGV[9]  channel         events channel
  ARGV[10] tenant
  ARGV[11] command

  Returns {available, id, record, created, payload}: available is 1 when the
  queue went from no ready task to one; created is 0 when the idempotency
  key matched an existing task, whose id, record and payload are returned
  instead (payload is nil for a new task).
]]
-- @include common
-- @include create_task

local k = {tiers = KEYS[2], delayed = KEYS[3], tasks = KEYS[4], payloads = KEYS[5],
           idem = KEYS[6]}
local id, raw, created, payload, ready = create_task(
  k, KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6],
  ARGV[7], tonumber(ARGV[8]), now_ms())
announce_ready(KEYS[7], ARGV[9], ARGV[10], ARGV[11], ready)
return {became_available, id, raw, created, payload}
