-- Create a sale. KEYS: meta stock sold buyers res settled seq res_at
-- ARGV: initial limit start_ms end_ms
if redis.call('EXISTS', KEYS[1]) == 1 then return {'SALE_EXISTS'} end
local initial = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'limit', ARGV[2], 'start_ms', ARGV[3],
  'end_ms', ARGV[4], 'paused', '0', 'created_ms', tostring(now_ms()))
redis.call('SET', KEYS[2], initial)
redis.call('SET', KEYS[3], 0)
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return {'OK'}
