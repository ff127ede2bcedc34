--[[
  End the upkeeps of one take: release each queue's lease (if still this
  take's) and put the queue back in the due index at its next upkeep time.
  ZADD LT keeps an earlier time that a create or claim wrote meanwhile.

  KEYS[1] due     zset queue -> when it next needs upkeep (ms)
  KEYS[2] upkeep  zset queue -> end of the lease on its running upkeep (ms)

  ARGV[1]         leaseUntil returned by upkeep_take.lua
  ARGV[2k], ARGV[2k+1]  a queue and its next upkeep (ms, -1: none)

  Returns the number of queues put back in the due index.
]]

local lease_until, back = tonumber(ARGV[1]), 0
for i = 2, #ARGV, 2 do
  local queue, next_at = ARGV[i], tonumber(ARGV[i + 1])
  if tonumber(redis.call('ZSCORE', KEYS[2], queue)) == lease_until then
    redis.call('ZREM', KEYS[2], queue)
  end
  if next_at >= 0 then
    redis.call('ZADD', KEYS[1], 'LT', next_at, queue)
    back = back + 1
  end
end
return back
