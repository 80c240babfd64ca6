-- Settle a reservation exactly once. KEYS: stock sold buyers res done res_at
-- ARGV: order_id outcome ('released' returns the unit to stock; 'paid' counts it sold)
local user = redis.call('HGET', KEYS[4], ARGV[1])
if not user then
  local d = redis.call('HGET', KEYS[5], ARGV[1])
  if not d then return {'NO_ORDER'} end
  return {'ALREADY_' .. string.upper(string.match(d, '^(%a+)'))}
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
if ARGV[2] == 'released' then
  redis.call('INCR', KEYS[1])
  if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then redis.call('HDEL', KEYS[3], user) end
elseif ARGV[2] == 'paid' then
  redis.call('INCR', KEYS[2])
else
  return redis.error_reply('ERR unknown outcome ' .. tostring(ARGV[2]))
end
redis.call('HSET', KEYS[5], ARGV[1], ARGV[2] .. '|' .. user)
return {'OK', user}
