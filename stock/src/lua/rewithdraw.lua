-- Redo the withdrawal of a transfer whose deposit survived but whose source master lost
-- it (an append-only file's last second, a promoted replica behind): without it the units
-- would exist twice. Once only: a transfer the source journals (in flight or done) is
-- left alone. Takes what stock the bucket has; a shortfall is units already sold twice.
-- KEYS: stock xout xdone (the source bucket's)  ARGV: id dest count
-- Returns {'OK', applied (0|1), shortfall}.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {'OK', 0, 0}
end
local want = tonumber(ARGV[3])
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.max(0, math.min(left, want))
if n > 0 then redis.call('DECRBY', KEYS[1], n) end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return {'OK', 1, want - n}
