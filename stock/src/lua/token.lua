-- Issue a single-use purchase token: of a sale, or in the buyer's home bucket of a
-- bucketed sale (one script for both). KEYS: meta stock buyers token user_tokens
-- ARGV: user ttl_ms max_live (0: no cap on the buyer's live tokens) skip_stock empty
--   skip_stock: '1' skips the stock check (a bucket's caller saw stock elsewhere);
--   empty: the answer when no unit is left here: 'SOLD_OUT', or 'EMPTY' in a bucket
--          (the caller looks at the other buckets; only the whole sale is sold out).
local meta = redis.call('HMGET', KEYS[1], 'limit', 'start_ms', 'end_ms', 'paused')
local now = now_ms()
local shut = closed(meta, now)
if shut then return shut end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') >= tonumber(meta[1]) then
  return {'ALREADY_BOUGHT'}
end
if ARGV[4] ~= '1' and tonumber(redis.call('GET', KEYS[2]) or '0') <= 0 then return {ARGV[5]} end
local ttl = tonumber(ARGV[2])
local exp = now + ttl
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= cap then return {'TOO_MANY_TOKENS'} end
end
-- The key outlives the token by a minute so that "expired" and "reused" stay
-- distinguishable from "never issued". It records when it was issued, in µs (`user|exp|new|issued`):
-- a reconcile that put back lost orders voids every token issued before it (reapply.lua).
if not redis.call('SET', KEYS[4], ARGV[1] .. '|' .. exp .. '|new|' .. now_us(), 'PX', ttl + 60000, 'NX') then
  return {'TOKEN_COLLISION'}
end
if cap > 0 then
  redis.call('ZADD', KEYS[5], exp, KEYS[4])
  redis.call('PEXPIRE', KEYS[5], ttl + 60000)
end
return {'OK', exp}
