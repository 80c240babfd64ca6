-- Restore one bucket of a bucketed sale lost with Redis's data (restore.lua, bucket by
-- bucket: each bucket is its own slot). Overwrites whatever a restore cut short left in
-- this bucket; the sale exists only once brestoremeta.lua writes its own meta, last.
-- KEYS: meta stock sold buyers res settled seq res_at xout xin xdone (the bucket's)
-- ARGV: units limit start_ms end_ms paused bucket buckets seq n, then n (order_id, user,
-- status) of the orders whose sequence names this bucket (status: reserved | paid |
-- cancelled), then (user, units) of the buyers whose home is this bucket.
-- Returns {'OK', units, held, sold}.
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  KEYS[9], KEYS[10], KEYS[11])
local now = now_ms()
local held, sold = 0, 0
local i = 10
for _ = 1, tonumber(ARGV[9]) do
  local oid, user, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if status == 'reserved' then
    redis.call('HSET', KEYS[5], oid, user)
    -- A restored reservation gets a whole payment window from now.
    redis.call('HSET', KEYS[8], oid, now)
    held = held + 1
  elseif status == 'paid' then
    redis.call('HSET', KEYS[6], oid, 'paid|' .. user)
    sold = sold + 1
  elseif status == 'cancelled' then
    redis.call('HSET', KEYS[6], oid, 'released|' .. user)
  else
    redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[8])
    return redis.error_reply('ERR unknown order status ' .. tostring(status))
  end
  i = i + 3
end
for j = i, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[4], ARGV[j], ARGV[j + 1])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], sold)
redis.call('SET', KEYS[7], ARGV[8])
local units = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'initial', tostring(units + held + sold), 'limit', ARGV[2],
  'start_ms', ARGV[3], 'end_ms', ARGV[4], 'paused', ARGV[5], 'created_ms', tostring(now),
  'restored_ms', tostring(now), 'bucket', ARGV[6], 'buckets', ARGV[7], 'void_before', now_us())
return {'OK', units, held, sold}
