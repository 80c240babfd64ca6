-- Buy one unit in the buyer's home bucket of a bucketed sale: as purchase.lua, but an
-- empty bucket answers EMPTY (nothing changes, the token stays good: the caller moves
-- units in from other buckets and retries), and the order sequence steps by the bucket
-- count (ARGV[3]) so that seq mod buckets is this bucket.
-- KEYS: meta stock buyers res token seq res_at settled user_tokens (the bucket's)
-- ARGV: user sale buckets
-- A retry with a token that already bought (its reply was lost, say) gets the same
-- order back while that order stands (held or paid), and nothing changes.
-- Otherwise, in order: sale open -> token valid for this user -> under the per-user
-- limit -> stock left -> deduct, record buyer and reservation, consume the token
-- (which remembers its order).
local meta = redis.call('HMGET', KEYS[1], 'limit', 'start_ms', 'end_ms', 'paused')
local tv = redis.call('GET', KEYS[5])
local owner, exp, state, prior
if tv then
  owner, exp, state, prior = string.match(tv, '^([^|]*)|(%d+)|(%a+)|?([^|]*)$')
  if owner == ARGV[1] and state == 'used' and prior ~= '' and meta[1] then
    local paid = string.sub(redis.call('HGET', KEYS[8], prior) or '', 1, 4) == 'paid'
    if paid or redis.call('HEXISTS', KEYS[4], prior) == 1 then
      return {'OK', prior, tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(meta[1]), 1}
    end
  end
end
local now = now_ms()
local shut = closed(meta, now)
if shut then return shut end
if not tv then return {'TOKEN_INVALID'} end
if owner ~= ARGV[1] then return {'TOKEN_NOT_YOURS'} end
if state ~= 'new' then return {'TOKEN_USED'} end
if now >= tonumber(exp) then return {'TOKEN_EXPIRED'} end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') >= tonumber(meta[1]) then
  return {'ALREADY_BOUGHT'}
end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then return {'EMPTY'} end
left = redis.call('DECR', KEYS[2])
if left < 0 then return redis.error_reply('INVARIANT stock below zero') end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local oid = ARGV[2] .. '-' .. string.format('%d', redis.call('INCRBY', KEYS[6], ARGV[3]))
redis.call('HSET', KEYS[4], oid, ARGV[1])
redis.call('HSET', KEYS[7], oid, now)
redis.call('SET', KEYS[5], owner .. '|' .. exp .. '|used|' .. oid, 'KEEPTTL')
redis.call('ZREM', KEYS[9], KEYS[5])
return {'OK', oid, left, tonumber(meta[1]), 0}
