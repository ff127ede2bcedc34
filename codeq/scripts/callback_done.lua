--[[
  Record how one delivery attempt of a callback ended, if the caller still
  holds it (its lease was not taken over meanwhile).

  KEYS[1] outbox    zset id -> when its callback is next due (ms)
  KEYS[2] callbacks hash id -> callback record

  ARGV[1] id
  ARGV[2] taker     token the entry was taken with
  ARGV[3] outcome   delivered | retry | failed (no attempt left) | deferred (not
                    sent: its receiver was busy; no attempt is counted)
  ARGV[4] error     what went wrong ('' when delivered or deferred)
  ARGV[5] retry at  ms, for retry and deferred

  Returns 1, or 0 when the caller no longer held the entry.
]]
-- @include common

local id = ARGV[1]
local raw = redis.call('HGET', KEYS[2], id)
if not raw then
  return 0
end
local cb = cmsgpack.unpack(raw)
if cb[5] ~= ARGV[2] then
  return 0
end
local outcome = ARGV[3]
local attempts = cb[2]
if outcome ~= 'deferred' then
  attempts = attempts + 1
end
local err = cb[3]
if ARGV[4] ~= '' then
  err = ARGV[4]
end
local status = CB_PENDING
if outcome == 'delivered' then
  status = CB_DELIVERED
  redis.call('ZREM', KEYS[1], id)
elseif outcome == 'failed' then
  status = CB_FAILED
  redis.call('ZREM', KEYS[1], id)
else
  redis.call('ZADD', KEYS[1], tonumber(ARGV[5]), id)
end
redis.call('HSET', KEYS[2], id, '\149' .. cmsgpack.pack(status, attempts, err, cb[4], nil))
return 1
