-- Create a sale. KEYS: meta stock sold buyers res settled seq res_at
-- ARGV: initial limit start_ms end_ms [price_cents]
if redis.call('EXISTS', KEYS[1]) == 1 then return {'SALE_EXISTS'} end
local initial = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'limit', ARGV[2], 'start_ms', ARGV[3],
  'end_ms', ARGV[4], 'paused', '0', 'created_ms', tostring(now_ms()))
if ARGV[5] then redis.call('HSET', KEYS[1], 'price', ARGV[5]) end
redis.call('SET', KEYS[2], initial)
redis.call('SET', KEYS[3], 0)
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[8])
-- Order ids continue from this moment in milliseconds times 1000, not from 1: a sale
-- re-created after Redis lost it (a second or more later) never reuses an id already in
-- PostgreSQL. 16 digits: exact in Lua's doubles (below 2^53).
local t = redis.call('TIME')
redis.call('SET', KEYS[7], t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)) .. '000')
return {'OK'}
