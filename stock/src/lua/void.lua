-- Void every token of a sale (or of one bucket) issued until now: a reconcile after Redis
-- lost writes runs it first, since a token spent in the lost tail came back new and its
-- order may reach the reconcile only later (a spool, a slow delivery). purchase.lua
-- refuses a new token issued at or before `void_before` (409 token_expired; the buyer
-- asks for another). KEYS: meta. Returns {'OK'} or {'NO_SALE'}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_SALE'} end
redis.call('HSET', KEYS[1], 'void_before', now_us())
return {'OK'}
