--[[
  Store a new availability subscription of a tenant.

  KEYS[1] subs      hash id -> subscription record
  KEYS[2] expiry    zset id -> expires at (ms)
  KEYS[3]           and each key after it: a set of subscription ids, one
                    per command it names (or the tenant's set of those that
                    name none)

  ARGV[1] id
  ARGV[2] record    msgpack [callbackUrl, eventTypes, deliveryMode, groupId,
                    minIntervalMs, ttlMs]
  ARGV[3] ttl       ms

  Returns when it expires (ms).
]]
-- @include common

local now = now_ms()
-- A few expired subscriptions go with each new one: their command sets
-- forget them when a pick comes across them.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 10)) do
  redis.call('HDEL', KEYS[1], old)
  redis.call('ZREM', KEYS[2], old)
end
local id, expires = ARGV[1], now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], id, ARGV[2])
redis.call('ZADD', KEYS[2], expires, id)
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], id)
end
return expires
