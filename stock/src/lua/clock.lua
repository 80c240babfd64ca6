-- Shared prelude (prepended to every script): the sale's clock is Redis's clock, so
-- every gateway instance agrees on "started" and "ended".
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Microseconds, for ordering scripts that may run within one millisecond (a token issued
-- just before or just after a reconcile voided the tokens before it).
local function now_us()
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end

-- Sale state shared by token issue and purchase. Returns nil when open, or a reply.
local function closed(meta, now)
  if not meta[1] then return {'NO_SALE'} end
  if meta[4] == '1' then return {'PAUSED'} end
  if now < tonumber(meta[2]) then return {'NOT_STARTED', meta[2]} end
  if now >= tonumber(meta[3]) then return {'ENDED'} end
  return nil
end
