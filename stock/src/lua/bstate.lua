-- One bucket of a bucketed sale, in one step: its stock, paid units, held reservations,
-- Redis's clock, and its journal of transfers out (id, 'dest|count' pairs).
-- KEYS: meta stock sold res xout (the bucket's)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_SALE'} end
local out = {'OK', redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3]) or '0',
  redis.call('HLEN', KEYS[4]), now_ms()}
local j = redis.call('HGETALL', KEYS[5])
for i = 1, #j do out[#out + 1] = j[i] end
return out
