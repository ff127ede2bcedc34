--[[
  Remove a subscription: its record, expiry, last notification and the
  command sets it was in.

  KEYS[1] subs      hash id -> subscription record
  KEYS[2] expiry    zset id -> expires at (ms)
  KEYS[3] last      hash id -> when it was last notified (ms)
  KEYS[4]           and each key after it: a command set it is in

  ARGV[1] id

  Returns 1 when it was live, 0 when it had expired or was unknown.
]]
-- @include common

local id = ARGV[1]
local expires = tonumber(redis.call('ZSCORE', KEYS[2], id))
local existed = redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
for i = 4, #KEYS do
  redis.call('SREM', KEYS[i], id)
end
if existed == 1 and expires and expires > now_ms() then
  return 1
end
return 0
