-- Move units out of a bucket (first half of a transfer between buckets): take up to
-- `want` units from this bucket's stock and journal them, in the same slot and the same
-- step, as transfer `id` bound for bucket `dest`. Until the journal entry is removed
-- (after the deposit), the units count as in flight; recovery deposits them.
-- KEYS: stock xout (the source bucket's)  ARGV: id dest want
-- Returns {'OK', taken, left}.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return redis.error_reply('ERR transfer id already journaled')
end
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.min(left, tonumber(ARGV[3]))
if n <= 0 then return {'OK', 0, left} end
redis.call('DECRBY', KEYS[1], n)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. n)
return {'OK', n, left - n}
