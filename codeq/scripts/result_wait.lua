--[[
  Read a task with its result; when there is no result yet and the caller
  will wait, note the id so the result script publishes its completion.

  KEYS[1] tasks     hash of task records
  KEYS[2] results   hash of result records
  KEYS[3] rwaiters  set of ids whose result is long-polled

  ARGV[1] id
  ARGV[2] wait      1 when the caller will wait for the result, else 0

  Returns {0, task record, result record}, {6, task record} when there is
  no result yet, or {1} for an unknown task.
]]

local task = redis.call('HGET', KEYS[1], ARGV[1])
if not task then
  return {1}
end
local result = redis.call('HGET', KEYS[2], ARGV[1])
if result then
  return {0, task, result}
end
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[3], ARGV[1])
end
return {6, task}
