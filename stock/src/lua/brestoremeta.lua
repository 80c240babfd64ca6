-- The last step of restoring a bucketed sale: its own meta (as bcreate.lua writes it),
-- once every bucket is in place. Until then the sale does not exist, so a restore cut
-- short is run again from the start. KEYS: meta
-- ARGV: initial limit start_ms end_ms paused buckets
if redis.call('EXISTS', KEYS[1]) == 1 then return {'SALE_EXISTS'} end
local ms = tostring(now_ms())
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'limit', ARGV[2], 'start_ms', ARGV[3],
  'end_ms', ARGV[4], 'paused', ARGV[5], 'created_ms', ms, 'restored_ms', ms, 'buckets', ARGV[6])
return {'OK'}
