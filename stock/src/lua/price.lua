-- Set a sale's price in cents (a restore writes it again from the sale's definition).
-- KEYS: meta  ARGV: price_cents
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_SALE'} end
redis.call('HSET', KEYS[1], 'price', ARGV[1])
return {'OK'}
