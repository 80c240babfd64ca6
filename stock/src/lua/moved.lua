-- The last step of a transfer between buckets, on the source once the deposit is recorded:
-- its journal entry moves from `xout` (in flight) to `xdone` (the source's half of the
-- ledger, kept while the sale lives). KEYS: xout xdone (the source bucket's)  ARGV: id
-- Returns {'OK', 1} when moved now, {'OK', 0} when it was not in flight.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'OK', 0} end
redis.call('HSET', KEYS[2], ARGV[1], v)
redis.call('HDEL', KEYS[1], ARGV[1])
return {'OK', 1}
