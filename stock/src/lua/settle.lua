-- Settle reservations exactly once: `HDEL res` is the arbiter, so pay and cancel racing
-- on one order have one winner. One call settles any number of orders of one sale (or
-- of one bucket of a bucketed sale): the payment-window scan settles a page in one step.
-- KEYS: stock sold buyers res done res_at [token]
-- ARGV: outcome order_id... ('released' returns each unit to stock; 'paid' counts it
-- sold; 'unacknowledged' — ARGV: outcome order_id reserved_at, its token as KEYS[7] —
-- releases like 'released' only if the token is still there and was not answered with
-- the order by a retry (which may have acknowledged it) and the reservation is the
-- purchase's own (not put back by a reconcile, which only puts back acknowledged
-- orders); else {'REPLAYED'}: the order may stand)
-- Reply: one entry per order, in order: {'OK', user}, {'ALREADY_PAID'},
-- {'ALREADY_RELEASED'}, {'NO_ORDER'} or {'REPLAYED'}.
local how = ARGV[1]
if how ~= 'released' and how ~= 'paid' and how ~= 'unacknowledged' then
  return redis.error_reply('ERR unknown outcome ' .. tostring(how))
end
local out = {}
local last = #ARGV
if how == 'unacknowledged' then last = 2 end
for i = 2, last do
  local id = ARGV[i]
  local user = redis.call('HGET', KEYS[4], id)
  local tv = user and how == 'unacknowledged' and redis.call('GET', KEYS[7])
  if user and how == 'unacknowledged' and (not tv
      or string.find(tv, '|replayed|', 1, true)
      or redis.call('HGET', KEYS[6], id) ~= ARGV[3]) then
    out[#out + 1] = {'REPLAYED'}
  elseif not user then
    local d = redis.call('HGET', KEYS[5], id)
    if d then
      out[#out + 1] = {'ALREADY_' .. string.upper(string.match(d, '^(%a+)'))}
    else
      out[#out + 1] = {'NO_ORDER'}
    end
  else
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[6], id)
    if how ~= 'paid' then
      redis.call('INCR', KEYS[1])
      if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then redis.call('HDEL', KEYS[3], user) end
    else
      redis.call('INCR', KEYS[2])
    end
    redis.call('HSET', KEYS[5], id, (how == 'paid' and 'paid' or 'released') .. '|' .. user)
    out[#out + 1] = {'OK', user}
  end
end
return out
