-- Rebuild a sale lost with Redis's data, from its definition and every order known
-- elsewhere (PostgreSQL and the order topic). KEYS: meta stock sold buyers res settled seq res_at
-- ARGV: initial limit start_ms end_ms paused max_seq, then (order_id, user, status)*
-- status: reserved | paid | cancelled. Refuses to overwrite a sale that exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'SALE_EXISTS'} end
local initial = tonumber(ARGV[1])
local held, sold = 0, 0
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
local now = now_ms()
for i = 7, #ARGV, 3 do
  local oid, user, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if status == 'reserved' then
    redis.call('HSET', KEYS[5], oid, user)
    -- A restored reservation gets a whole payment window from now.
    redis.call('HSET', KEYS[8], oid, now)
    redis.call('HINCRBY', KEYS[4], user, 1)
    held = held + 1
  elseif status == 'paid' then
    redis.call('HSET', KEYS[6], oid, 'paid|' .. user)
    redis.call('HINCRBY', KEYS[4], user, 1)
    sold = sold + 1
  elseif status == 'cancelled' then
    redis.call('HSET', KEYS[6], oid, 'released|' .. user)
  else
    return redis.error_reply('ERR unknown order status ' .. tostring(status))
  end
end
if held + sold > initial then
  -- Never write an oversold sale: leave nothing behind and say so.
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
  return {'OVERSOLD', held, sold}
end
redis.call('SET', KEYS[2], initial - held - sold)
redis.call('SET', KEYS[3], sold)
-- Past every id known and past Redis's clock x 1000: an order the restore could not see
-- (a delivery under way, a gateway's spool) never shares an id with a new one.
local next_seq = math.max(tonumber(ARGV[6]), now * 1000)
redis.call('SET', KEYS[7], string.format('%d', next_seq))
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'limit', ARGV[2], 'start_ms', ARGV[3],
  'end_ms', ARGV[4], 'paused', ARGV[5], 'created_ms', tostring(now_ms()), 'restored_ms', tostring(now_ms()),
  'void_before', now_us())
return {'OK', initial - held - sold, held, sold, next_seq + 1}
