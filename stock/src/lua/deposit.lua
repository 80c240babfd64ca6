-- Move units into a bucket (second half of a transfer), exactly once: the transfer id is
-- recorded in this bucket's slot with its source and the units it brought, so a replayed
-- deposit (a recovery racing the mover, or run twice) changes nothing, and a reconcile
-- can find the source's half (`rewithdraw.lua`) if that master lost it.
-- KEYS: stock xin (the destination bucket's)  ARGV: id count from
-- Returns {'OK', 1} when applied now, {'OK', 0} when it already was.
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3] .. '|' .. ARGV[2]) == 0 then return {'OK', 0} end
redis.call('INCRBY', KEYS[1], ARGV[2])
return {'OK', 1}
