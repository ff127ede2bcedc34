--[[
  Add one server process' counts of one second to its tenant's throughput
  series (the dashboard's charts), and keep that minute of it a while longer.
  One script, so the counts never outlive their TTL.

  KEYS[1] minute    hash "<second>:<series>" -> tasks, one minute of a tenant's

  ARGV[1]   ttl     seconds the hash is kept after this write
  ARGV[2..] pairs of field ("<second>:created", ":completed" or ":failed")
            and the count to add to it

  Returns 0.
]]

for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 0
