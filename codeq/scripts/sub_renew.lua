--[[
  Renew a subscription for its ttl, unless it is unknown or has expired.

  KEYS[1] subs      hash id -> subscription record
  KEYS[2] expiry    zset id -> expires at (ms)

  ARGV[1] id

  Returns when it now expires (ms), or 0.
]]
-- @include common

local id, now = ARGV[1], now_ms()
local raw = redis.call('HGET', KEYS[1], id)
local expires = tonumber(redis.call('ZSCORE', KEYS[2], id))
if not raw or not expires or expires <= now then
  return 0
end
expires = now + cmsgpack.unpack(raw)[6]
redis.call('ZADD', KEYS[2], expires, id)
return expires
