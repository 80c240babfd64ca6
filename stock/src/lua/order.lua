-- Where one order stands. KEYS: res settled  ARGV: order_id
local user = redis.call('HGET', KEYS[1], ARGV[1])
if user then return {'OK', 'reserved', user} end
local d = redis.call('HGET', KEYS[2], ARGV[1])
if not d then return {'NO_ORDER'} end
local state, who = string.match(d, '^(%a+)|(.*)$')
return {'OK', state, who}
