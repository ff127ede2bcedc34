--[[
  Take callbacks due for delivery from a queue's outbox, under a lease: each
  taken entry is due again (for any dispatcher) when the lease ends, so the
  entries of a dispatcher that dies mid-send are taken over.

  KEYS[1] outbox    zset id -> when its callback is next due (ms)
  KEYS[2] callbacks hash id -> callback record
  KEYS[3] tasks     hash id -> task record
  KEYS[4] results   hash id -> result record

  ARGV[1] limit     most entries taken
  ARGV[2] lease     ms
  ARGV[3] taker     token of the dispatcher taking them

  Returns {lease until (ms), id, callback record, task record, result record,
  ...}: four per entry taken. An entry whose task or result is gone
  (removed by retention) is dropped.
]]
-- @include common

local now = now_ms()
local until_ms = now + tonumber(ARGV[2])
local out = {until_ms}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0,
                               tonumber(ARGV[1]))) do
  local raw_cb = redis.call('HGET', KEYS[2], id)
  local task = redis.call('HGET', KEYS[3], id)
  local result = redis.call('HGET', KEYS[4], id)
  if raw_cb and task and result then
    local cb = cmsgpack.unpack(raw_cb)
    cb[5] = ARGV[3]
    raw_cb = '\149' .. cmsgpack.pack(cb[1], cb[2], cb[3], cb[4], cb[5])
    redis.call('HSET', KEYS[2], id, raw_cb)
    redis.call('ZADD', KEYS[1], until_ms, id)
    out[#out + 1] = id
    out[#out + 1] = raw_cb
    out[#out + 1] = task
    out[#out + 1] = result
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
