-- Buy one unit: of a sale, or of the buyer's home bucket of a bucketed sale (one script
-- for both, so a fix cannot miss a twin).
-- KEYS: meta stock buyers res token seq res_at settled user_tokens (the bucket's)
-- ARGV: user sale step empty
--   step: the order sequence's step, the bucket count (1 unbucketed), so that
--         seq mod buckets names the bucket;
--   empty: the answer when no unit is left here: 'SOLD_OUT', or 'EMPTY' in a bucket
--         (nothing changes, the token stays good: the caller moves units in and retries).
-- A retry with a token that already bought (its reply was lost, say) gets the same
-- order back while that order stands (held or paid), and nothing changes, whatever the
-- sale's state (sold out, ended, paused): the buyer's own order is not news to refuse.
-- The token is marked replayed (`owner|exp|replayed|order`): this retry may acknowledge
-- the order, so the first attempt may no longer release it as unacknowledged.
-- A new token issued at or before the sale's `void_before` (set by a reconcile after a
-- loss, a restore, a put-back of orders Redis had lost: their tokens may have come back
-- new) is refused as expired, and leaves the buyer's live-token count: a token spent in
-- a lost tail must not buy a second time.
-- Otherwise, in order: sale open -> token valid for this user -> under the per-user
-- limit -> stock left -> deduct, record buyer and reservation, consume the token
-- (which remembers its order).
-- Reply: {'OK', order_id, remaining, limit, replayed (0|1), reserved_at_ms (0: paid)}
local meta = redis.call('HMGET', KEYS[1], 'limit', 'start_ms', 'end_ms', 'paused', 'void_before')
local tv = redis.call('GET', KEYS[5])
local owner, exp, state, prior
if tv then
  owner, exp, state, prior = string.match(tv, '^([^|]*)|(%d+)|(%a+)|?([^|]*)$')
  if owner == ARGV[1] and (state == 'used' or state == 'replayed') and prior ~= '' and meta[1] then
    local paid = string.sub(redis.call('HGET', KEYS[8], prior) or '', 1, 4) == 'paid'
    if paid or redis.call('HEXISTS', KEYS[4], prior) == 1 then
      local at = tonumber(redis.call('HGET', KEYS[7], prior) or '0')
      if state == 'used' then
        redis.call('SET', KEYS[5], owner .. '|' .. exp .. '|replayed|' .. prior, 'KEEPTTL')
      end
      return {'OK', prior, tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(meta[1]), 1, at}
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
if meta[5] and (tonumber(prior) or 0) <= tonumber(meta[5]) then
  redis.call('ZREM', KEYS[9], KEYS[5])
  return {'TOKEN_EXPIRED'}
end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') >= tonumber(meta[1]) then
  return {'ALREADY_BOUGHT'}
end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then return {ARGV[4]} end
left = redis.call('DECR', KEYS[2])
if left < 0 then return redis.error_reply('INVARIANT stock below zero') end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local oid = ARGV[2] .. '-' .. string.format('%d', redis.call('INCRBY', KEYS[6], ARGV[3]))
redis.call('HSET', KEYS[4], oid, ARGV[1])
redis.call('HSET', KEYS[7], oid, now)
redis.call('SET', KEYS[5], owner .. '|' .. exp .. '|used|' .. oid, 'KEEPTTL')
redis.call('ZREM', KEYS[9], KEYS[5])
return {'OK', oid, left, tonumber(meta[1]), 0, now}
