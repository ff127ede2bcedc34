--[[
  Read a task with its payload and result; when there is no result yet and
  the caller will wait, note the id so the result script publishes it.

  KEYS[1] tasks     hash id -> task record
  KEYS[2] payloads  hash id -> payload (JSON text)
  KEYS[3] results   hash id -> result record
  KEYS[4] rwaiters  set of ids whose result is long-polled

  ARGV[1] id
  ARGV[2] wait      1 when the caller will wait for the result, else 0

  Returns {0, record, payload, result}, {6, record, payload} when there is
  no result yet, or {1} for an unknown task.
]]

local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then
  return {1}
end
local payload = redis.call('HGET', KEYS[2], ARGV[1])
local result = redis.call('HGET', KEYS[3], ARGV[1])
if result then
  return {0, record, payload, result}
end
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[4], ARGV[1])
end
return {6, record, payload}
