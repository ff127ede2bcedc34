--[[
  Claim up to `count` ready tasks of one queue: highest tier first, FIFO
  within a tier, visiting only the tiers that may hold tasks. Due delayed
  tasks are promoted first, so a claim never waits for the upkeep to see them.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    tiers     zset of the tiers whose ready list may hold tasks
  KEYS[12]    delayed   zset of delayed ids
  KEYS[13]    inflight  zset id -> lease until (ms)
  KEYS[14]    tasks     hash id -> task record
  KEYS[15]    payloads  hash id -> payload (JSON text)
  KEYS[16]    waiting   set while a claim long-polls this queue

  ARGV[1] workerId
  ARGV[2] lease      ms
  ARGV[3] leaseId    fresh lease token; with count > 1, '-<n>' is appended
  ARGV[4] count
  ARGV[5] wait       ms the caller will long-poll when nothing is ready; 0 none
  ARGV[6] channel    events channel
  ARGV[7] tenant
  ARGV[8] command

  Returns {0, id, record, payload, ...}: three per claimed task, possibly none.
]]
-- @include common

local worker, lease_ms, lease_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local count, wait_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local tiers, tasks = KEYS[11], KEYS[14]
local now = now_ms()

-- Bounded, so a claim stays cheap however many tasks fall due at once.
local promoted = promote_due(KEYS[12], tiers, tasks, now, 100)

local out, taken = {0}, 0
local lease_until = now + lease_ms
for _, tier in ipairs(redis.call('ZRANGE', tiers, 0, -1)) do
  local want = count - taken
  if want <= 0 then
    break
  end
  local list = ready_key(tonumber(tier))
  local ids = redis.call('LPOP', list, want)
  if not ids or #ids < want or redis.call('LLEN', list) == 0 then
    redis.call('ZREM', tiers, tier)  -- emptied
  end
  for _, id in ipairs(ids or {}) do
    local t = load_task(tasks, id)
    if t and t[STATUS] == PENDING then
      taken = taken + 1
      t[STATUS], t[ATTEMPTS], t[WORKER] = IN_PROGRESS, t[ATTEMPTS] + 1, worker
      t[LEASE] = count > 1 and (lease_id .. '-' .. taken) or lease_id
      t[LEASE_UNTIL], t[UPDATED] = lease_until / 1000, now / 1000
      redis.call('ZADD', KEYS[13], lease_until, id)
      out[#out + 1] = id
      out[#out + 1] = save_task(tasks, id, t)
      out[#out + 1] = redis.call('HGET', KEYS[15], id)
    end
  end
end

-- Promoted tasks this claim did not take are news to other long polls.
announce_ready(KEYS[16], ARGV[6], ARGV[7], ARGV[8], promoted - taken)
if taken == 0 and wait_ms > 0 and redis.call('PTTL', KEYS[16]) < wait_ms then
  redis.call('SET', KEYS[16], '1', 'PX', wait_ms)
end
return out
