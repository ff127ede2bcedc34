--[[
  Claim up to `count` ready tasks of one queue: highest tier first, FIFO
  within a tier. Due delayed tasks are promoted first, so a claim never
  waits for the background tick to see them.

  KEYS[1..10] ready     ready lists, tier 9 first
  KEYS[11]    delayed   zset of delayed ids
  KEYS[12]    inflight  zset id -> lease until (ms)
  KEYS[13]    tasks     hash of task records
  KEYS[14]    waiting   set while a claim long-polls this queue

  ARGV[1] workerId
  ARGV[2] lease      ms
  ARGV[3] leaseId    fresh lease token; with count > 1, '-<n>' is appended
  ARGV[4] count
  ARGV[5] wait       ms the caller will long-poll when nothing is ready; 0 none
  ARGV[6] channel    events channel
  ARGV[7] tenant
  ARGV[8] command

  Returns {0, record...}: the claimed task records, possibly none.
]]
-- @include common

local worker, lease_ms, lease_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local count, wait_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()

-- Bounded, so a claim stays cheap however many tasks fall due at once.
local promoted = promote_due(KEYS[11], KEYS[13], now, 100)

local out = {0}
local lease_until = now + lease_ms
for tier = 1, 10 do
  local want = count - (#out - 1)
  if want <= 0 then
    break
  end
  local ids = redis.call('LPOP', KEYS[tier], want)
  if ids then
    for _, id in ipairs(ids) do
      local task = load_task(KEYS[13], id)
      if task and task.status == 'PENDING' then
        task.status = 'IN_PROGRESS'
        task.attempts = task.attempts + 1
        task.workerId = worker
        task.leaseId = lease_id
        if count > 1 then
          task.leaseId = lease_id .. '-' .. #out
        end
        task.leaseUntil = lease_until / 1000
        task.updatedAt = now / 1000
        redis.call('ZADD', KEYS[12], lease_until, id)
        out[#out + 1] = save_task(KEYS[13], task)
      end
    end
  end
end

-- Promoted tasks this claim did not take are news to other long polls.
announce_ready(KEYS[14], ARGV[6], ARGV[7], ARGV[8], promoted - (#out - 1))
if #out == 1 and wait_ms > 0 and redis.call('PTTL', KEYS[14]) < wait_ms then
  redis.call('SET', KEYS[14], '1', 'PX', wait_ms)
end
return out
