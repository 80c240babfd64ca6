-- Shared prelude (prepended to every script): the sale's clock is Redis's clock, so
-- every gateway instance agrees on "started" and "ended".
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Sale state shared by token issue and purchase. Returns nil when open, or a reply.
local function closed(meta, now)
  if not meta[1] then return {'NO_SALE'} end
  if meta[4] == '1' then return {'PAUSED'} end
  if now < tonumber(meta[2]) then return {'NOT_STARTED', meta[2]} end
  if now >= tonumber(meta[3]) then return {'ENDED'} end
  return nil
end
