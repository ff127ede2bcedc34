--[[
  Choose the subscriptions to tell that a command's queue has work, and mark
  them notified: every `fanout` one; per groupId of the `group` ones, the next
  in turn; per groupId of the `hash` ones, the one a stable hash of the
  command picks. A subscription notified less than its minInterval ago is
  passed over (a group's turn goes on to the next member). Atomic, so the
  server processes that all learn of the change notify each one at most once
  per minInterval between them.

  KEYS[1] subs      hash id -> subscription record
  KEYS[2] expiry    zset id -> expires at (ms)
  KEYS[3] last      hash id -> when it was last notified (ms)
  KEYS[4] turns     hash groupId -> notifications of the group so far
  KEYS[5] command   set of the ids of the subscriptions naming the command
  KEYS[6] any       set of the ids of the subscriptions naming no command

  ARGV[1] command

  Returns {id, callbackUrl, ...} of the subscriptions to notify. Expired
  subscriptions met on the way are removed.
]]
-- @include common

local now, command = now_ms(), ARGV[1]
local MODE, GROUP, URL, MIN_INTERVAL = 3, 4, 1, 5

local function live(id, set)
  local expires = tonumber(redis.call('ZSCORE', KEYS[2], id))
  local raw = redis.call('HGET', KEYS[1], id)
  if raw and expires and expires > now then
    return cmsgpack.unpack(raw)
  end
  -- Gone or expired: remove it (its other command sets forget it when
  -- their own picks come across it).
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('SREM', set, id)
  return nil
end

local function ready(id, sub)
  local last = tonumber(redis.call('HGET', KEYS[3], id))
  return not last or now - last >= sub[MIN_INTERVAL]
end

-- A stable multiplicative string hash, kept to 24 bits so every step is
-- exact in Lua numbers (no bit operations needed).
local function fnv(s)
  local h = 2166136261 % 16777216
  for i = 1, #s do
    h = ((h + s:byte(i)) * 16777619) % 16777216
  end
  return h
end

local out, groups, hashed = {}, {}, {}
local function take(id, sub)
  redis.call('HSET', KEYS[3], id, now)
  out[#out + 1] = id
  out[#out + 1] = sub[URL]
end

for _, set in ipairs({KEYS[5], KEYS[6]}) do
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local sub = live(id, set)
    if sub then
      local mode = sub[MODE]
      if mode == 'fanout' then
        if ready(id, sub) then take(id, sub) end
      else
        local into = mode == 'group' and groups or hashed
        local group = sub[GROUP]
        into[group] = into[group] or {}
        table.insert(into[group], {id, sub})
      end
    end
  end
end

local function by_id(a, b) return a[1] < b[1] end

for group, members in pairs(groups) do
  table.sort(members, by_id)
  local turn = redis.call('HINCRBY', KEYS[4], group, 1)
  for i = 0, #members - 1 do
    local m = members[(turn + i - 1) % #members + 1]
    if ready(m[1], m[2]) then
      take(m[1], m[2])
      break
    end
  end
end

for _, members in pairs(hashed) do
  local best, best_score = nil, -1
  for _, m in ipairs(members) do
    local score = fnv(m[1] .. '|' .. command)
    if score > best_score or (score == best_score and m[1] < best[1]) then
      best, best_score = m, score
    end
  end
  if best and ready(best[1], best[2]) then take(best[1], best[2]) end
end
return out
