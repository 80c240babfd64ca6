-- Buy one unit. KEYS: meta stock buyers res token seq res_at
-- ARGV: user sale
-- Order of checks: sale open -> token valid for this user -> under the per-user
-- limit -> stock left -> deduct, record buyer and reservation, consume token.
local meta = redis.call('HMGET', KEYS[1], 'limit', 'start_ms', 'end_ms', 'paused')
local now = now_ms()
local shut = closed(meta, now)
if shut then return shut end
local tv = redis.call('GET', KEYS[5])
if not tv then return {'TOKEN_INVALID'} end
local owner, exp, state = string.match(tv, '^([^|]*)|(%d+)|(%a+)$')
if owner ~= ARGV[1] then return {'TOKEN_NOT_YOURS'} end
if state ~= 'new' then return {'TOKEN_USED'} end
if now >= tonumber(exp) then return {'TOKEN_EXPIRED'} end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') >= tonumber(meta[1]) then
  return {'ALREADY_BOUGHT'}
end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then return {'SOLD_OUT'} end
left = redis.call('DECR', KEYS[2])
if left < 0 then return redis.error_reply('INVARIANT stock below zero') end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local oid = ARGV[2] .. '-' .. redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[4], oid, ARGV[1])
redis.call('HSET', KEYS[7], oid, now)
redis.call('SET', KEYS[5], owner .. '|' .. exp .. '|used', 'KEEPTTL')
return {'OK', oid, left, tonumber(meta[1])}
