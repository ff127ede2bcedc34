--[[
  Submit the terminal results of in-progress tasks of one queue (lease
  owner only), each on its own: one result, or a batch's items of this queue.

  KEYS[1] tasks     hash id -> task record
  KEYS[2] inflight  zset id -> lease until (ms)
  KEYS[3] results   hash id -> result record
  KEYS[4] done      zset id -> finished at (ms)
  KEYS[5] rwaiters  set of ids whose result is long-polled
  KEYS[6] outbox    zset id -> when its callback is next due (ms)
  KEYS[7] callbacks hash id -> callback record

  ARGV[1] channel   events channel
  ARGV[2] tenant
  then 7 per result: id, workerId, leaseId ('' for none), status (COMPLETED |
  FAILED), result (JSON text, '' for none), error ('' for none), artifacts
  (JSON text, '' for none)

  Returns {code, record, ..., owed}: two per result, in order, code 0 with
  the result record or a code of lease.lua and nil; then how many callbacks
  were written to the outbox.
]]
-- @include common
-- @include lease
-- @include finish

local k = {tasks = KEYS[1], inflight = KEYS[2], results = KEYS[3], done = KEYS[4],
           rwaiters = KEYS[5], outbox = KEYS[6], callbacks = KEYS[7]}
local now, out = now_ms(), {}
for i = 3, #ARGV, 7 do
  local id = ARGV[i]
  local t, code = check_lease(k.tasks, k.inflight, id, ARGV[i + 1], ARGV[i + 2], now)
  if t then
    local status = ARGV[i + 3] == 'COMPLETED' and COMPLETED or FAILED
    out[#out + 1] = 0
    out[#out + 1] = finish(k, id, t, status, ARGV[i + 4], ARGV[i + 5], ARGV[i + 5],
                           ARGV[i + 6], now, ARGV[1], ARGV[2])
  else
    out[#out + 1] = code
    out[#out + 1] = false
  end
end
out[#out + 1] = callbacks_owed
return out
