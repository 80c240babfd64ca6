-- Bring a sale (or one bucket) that survived in line with the orders known elsewhere,
-- after its Redis process lost recent writes (a restart from an append-only file synced
-- every second, a failover to a replica that had not received them).
-- KEYS: meta stock sold buyers res settled seq res_at
-- ARGV: buckets, bucket, then (order_id, user, status, seq)*
-- status: reserved | paid | cancelled (PostgreSQL's and the topic's, merged).
-- Per order, only what Redis lost is redone:
--  * unknown here, reserved or paid: take a unit again and hold it (a whole payment
--    window from now) or count it sold; if no unit is left it was sold again (an
--    oversell the fence should have prevented): counted as a conflict, not applied;
--  * held here but paid or cancelled there: settle it as there (the settle was lost);
--  * released here but paid there (the payment was lost, then the order expired here):
--    paid, its unit taken back from stock (the buyer's limit notwithstanding: a paid
--    unit must not sell again); if none is left the unit was sold again: a conflict;
--  * unknown here and cancelled: taken and given back, nothing to redo;
--  * here under another buyer: the id was handed out again after the loss (sold over):
--    a conflict.
-- The sequence moves past every id seen and past Redis's clock x 1000 (kept = bucket mod
-- buckets), so no id is handed out twice, not even one of an order the reconcile could not
-- see yet (a delivery still under way, a gateway's spool).
-- Returns {'OK', applied, conflicts}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_SALE'} end
local applied, conflicts = 0, 0
local now = now_ms()
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or '1')
-- Taking a unit again for `user` would break the stock (the loss was sold over) or, for
-- an order only reserved, the per-user limit (the buyer bought again meanwhile): a
-- conflict. A payment is never refused for the limit — its unit must not sell again.
local function blocked(user, status)
  return tonumber(redis.call('GET', KEYS[2]) or '0') <= 0
    or (status ~= 'paid' and tonumber(redis.call('HGET', KEYS[4], user) or '0') >= limit)
end
local seq = tonumber(redis.call('GET', KEYS[7]) or '0')
local top = seq
for i = 3, #ARGV, 4 do
  local oid, user, status, s = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if s > top then top = s end
  local holder = redis.call('HGET', KEYS[5], oid)
  local done = (not holder) and redis.call('HGET', KEYS[6], oid)
  local who = holder or (done and string.match(done, '|(.*)$'))
  local held, settled = holder and true, who and true
  if who and who ~= user then
    -- The id was handed out again to someone else: the loss was sold over.
    conflicts = conflicts + 1
  elseif held and status ~= 'reserved' then
    redis.call('HDEL', KEYS[5], oid)
    redis.call('HDEL', KEYS[8], oid)
    if status == 'paid' then
      redis.call('HSET', KEYS[6], oid, 'paid|' .. user)
      redis.call('INCR', KEYS[3])
    else
      redis.call('HSET', KEYS[6], oid, 'released|' .. user)
      redis.call('INCR', KEYS[2])
      if redis.call('HINCRBY', KEYS[4], user, -1) <= 0 then redis.call('HDEL', KEYS[4], user) end
    end
    applied = applied + 1
  elseif done and status == 'paid' and string.sub(done, 1, 9) == 'released|' then
    if blocked(user, status) then
      conflicts = conflicts + 1
    else
      redis.call('DECR', KEYS[2])
      redis.call('HINCRBY', KEYS[4], user, 1)
      redis.call('HSET', KEYS[6], oid, 'paid|' .. user)
      redis.call('INCR', KEYS[3])
      applied = applied + 1
    end
  elseif not settled and status ~= 'cancelled' then
    if blocked(user, status) then
      conflicts = conflicts + 1
    else
      redis.call('DECR', KEYS[2])
      redis.call('HINCRBY', KEYS[4], user, 1)
      if status == 'paid' then
        redis.call('HSET', KEYS[6], oid, 'paid|' .. user)
        redis.call('INCR', KEYS[3])
      else
        redis.call('HSET', KEYS[5], oid, user)
        redis.call('HSET', KEYS[8], oid, now)
      end
      applied = applied + 1
    end
  end
end
-- A token this Redis lost as spent (its order put back above) would buy again: every
-- token issued before now is void (purchase.lua); a buyer asks for a new one.
if applied > 0 then redis.call('HSET', KEYS[1], 'void_before', now_us()) end
local nb, b = tonumber(ARGV[1]), tonumber(ARGV[2])
local floor = now * 1000
floor = floor - (floor % nb) + b
if floor > top then top = floor end
if top > seq then redis.call('SET', KEYS[7], string.format('%d', top)) end
return {'OK', applied, conflicts}
