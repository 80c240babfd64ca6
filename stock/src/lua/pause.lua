-- Pause or resume a sale. KEYS: meta  ARGV: '1' or '0'
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_SALE'} end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return {'OK'}
