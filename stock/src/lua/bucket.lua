-- Create one bucket of a bucketed sale. KEYS: meta stock sold buyers res settled seq
-- res_at xout xin xdone (the bucket's). ARGV: units limit start_ms end_ms paused
-- seq_start bucket buckets. The bucket's meta copies the sale's definition so that its
-- token and purchase scripts check it in their own slot. A bucket that exists is never
-- overwritten (a sale whose meta was lost while this bucket survived: its sold units
-- would sell again); that sale is restored by the reconcile, not created.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'SALE_EXISTS'} end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  KEYS[9], KEYS[10], KEYS[11])
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'limit', ARGV[2], 'start_ms', ARGV[3],
  'end_ms', ARGV[4], 'paused', ARGV[5], 'created_ms', tostring(now_ms()), 'bucket', ARGV[7],
  'buckets', ARGV[8])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], 0)
redis.call('SET', KEYS[7], ARGV[6])
return {'OK'}
