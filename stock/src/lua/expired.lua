-- Reservations older than a cutoff, a page at a time. KEYS: res_at
-- ARGV: age_ms cursor count. Returns {'OK', next_cursor, order_id...}; cursor 0 = done.
local cutoff = now_ms() - tonumber(ARGV[1])
local page = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local out = {'OK', page[1]}
local kv = page[2]
for i = 1, #kv, 2 do
  if tonumber(kv[i + 1]) < cutoff then out[#out + 1] = kv[i] end
end
return out
