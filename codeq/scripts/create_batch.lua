--[[
  Create several tasks of one queue in one step (POST /tasks/batch): each
  ready at once or delayed, each idempotency key checked in turn.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tiers     zset of the tiers whose ready list may hold tasks
  KEYS[12]    delayed   zset of delayed ids
  KEYS[13]    tasks     hash id -> task record
  KEYS[14]    payloads  hash id -> payload (JSON text)
  KEYS[15]    idem      hash idempotency key -> id
  KEYS[16]    waiting   set while a claim long-polls this queue

  ARGV[1] channel   events channel
  ARGV[2] tenant
  ARGV[3] command
  then 8 per task: id, payload, priority (0..9), maxAttempts, webhook,
  idempotencyKey, runAt, delay (as in create.lua)

  Returns {available, id, record, created, payload, ...}: four per task, in
  order, as create.lua returns them; available as in create.lua.
]]
-- @include common
-- @include create_task

local k = {tiers = KEYS[11], delayed = KEYS[12], tasks = KEYS[13], payloads = KEYS[14],
           idem = KEYS[15]}
local now, out, ready = now_ms(), {0}, 0
for i = 4, #ARGV, 8 do
  local priority = tonumber(ARGV[i + 2])
  local id, raw, created, payload, now_ready = create_task(
    k, ready_key(priority), ARGV[i], ARGV[i + 1], priority, tonumber(ARGV[i + 3]), ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7]), now)
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = id, raw, created, payload
  ready = ready + now_ready
end
announce_ready(KEYS[16], ARGV[1], ARGV[2], ARGV[3], ready)
out[1] = became_available
return out
