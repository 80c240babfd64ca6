-- One consistent snapshot of a sale. KEYS: meta stock sold res
local m = redis.call('HMGET', KEYS[1], 'initial', 'limit', 'start_ms', 'end_ms', 'paused')
if not m[1] then return {'NO_SALE'} end
return {'OK', m[1], m[2], m[3], m[4], m[5], redis.call('GET', KEYS[2]) or '0',
  redis.call('GET', KEYS[3]) or '0', redis.call('HLEN', KEYS[4]), now_ms()}
