--[[
  Take one token from a token bucket (rate per second, up to burst), shared
  by every server process.

  KEYS[1] bucket    hash {tokens, at}: what was left, and when (ms)

  ARGV[1] rate      tokens added per second
  ARGV[2] burst     most tokens held

  Returns 0 when a token was taken, else the ms until one will be there.
]]
-- @include common

local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local kept = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(kept[1]) or burst
local at = tonumber(kept[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
-- Gone once it would be full again anyway.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
