-- Create a bucketed sale's definition; its buckets are created next (bucket.lua, one
-- script per bucket, each in its own slot). KEYS: meta
-- ARGV: initial limit start_ms end_ms buckets [price_cents]
-- Returns {'OK', base}: bucket b's order sequence starts at base + b and steps by
-- `buckets`, so seq mod buckets names the bucket and ids never repeat within the sale.
-- base is this moment in ms times 1000 (as create.lua), rounded down to a multiple of
-- `buckets`.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'SALE_EXISTS'} end
local n = tonumber(ARGV[5])
local ms = now_ms()
local base = ms * 1000
base = base - (base % n)
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'limit', ARGV[2], 'start_ms', ARGV[3],
  'end_ms', ARGV[4], 'paused', '0', 'created_ms', tostring(ms), 'buckets', ARGV[5])
if ARGV[6] then redis.call('HSET', KEYS[1], 'price', ARGV[6]) end
return {'OK', string.format('%d', base)}
