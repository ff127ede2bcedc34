--[[
  Return the number of a queue, giving it the next one the first time. Task
  ids carry their queue's number, so a task is found from its id alone.
  Numbers are never reused.

  KEYS[1] ids    hash "<tenant>:<command>" -> number
  KEYS[2] names  hash number -> "<tenant>:<command>"

  ARGV[1] the queue's "<tenant>:<command>"

  Returns its number (1 and up).
]]

local n = redis.call('HGET', KEYS[1], ARGV[1])
if n then
  return tonumber(n)
end
n = redis.call('HLEN', KEYS[1]) + 1
redis.call('HSET', KEYS[1], ARGV[1], n)
redis.call('HSET', KEYS[2], n, ARGV[1])
return n
