-- One bucket's (or an unbucketed sale's) stock ledger, in one step: its initial share,
-- the units it holds for sale, held by reservations and sold, and the units moved out
-- (in flight or done) and in. Balanced when
--   initial - out + in = stock + held + sold
-- which purchases, settlements and reapplied orders keep by construction; only a move
-- half lost with a master (or a bug) breaks it.
-- KEYS: meta stock sold res xout xdone xin
-- Returns {'OK', initial, stock, held, sold, out, in} or {'NO_SALE'}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_SALE'} end
local function total(key)
  local sum = 0
  local vals = redis.call('HVALS', key)
  for i = 1, #vals do
    sum = sum + (tonumber(string.match(vals[i], '(%-?%d+)$')) or 0)
  end
  return sum
end
return {'OK', tonumber(redis.call('HGET', KEYS[1], 'initial') or '0'),
  tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('HLEN', KEYS[4]),
  tonumber(redis.call('GET', KEYS[3]) or '0'), total(KEYS[5]) + total(KEYS[6]), total(KEYS[7])}
