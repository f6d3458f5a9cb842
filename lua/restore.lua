-- restore.lua: put a sale rebuilt from JetStream back into Redis, atomically, only if Redis
-- does not hold it, or holds a copy another primary wrote (which may be behind, see
-- purchase.lua).
--
-- The caller (src/recovery/rebuild.rs) has read the sale's events from the order stream, folded them
-- into order records, buyer tallies and idempotency keys, and written those into staging keys
-- of its own (same hash slot). This script installs them in one step. When this primary wrote
-- the sale already (another replica restored it first, or a PUT created it), it drops the
-- staging keys and changes nothing: a sale is never counted twice.
--
-- KEYS[1] sale           HASH  (see purchase.lua)
-- KEYS[2] orders         HASH  order_id -> order record
-- KEYS[3] buyers         HASH  user_id -> '<units held>:<order ids>' (see purchase.lua)
-- KEYS[4] staged orders  HASH  (may be absent: a sale without orders)
-- KEYS[5] staged buyers  HASH  (may be absent)
-- KEYS[6] staged idem    HASH  Idempotency-Key -> "<expires at ms>:<order_id>" (may be absent)
-- KEYS[7] deadlines      ZSET  (see purchase.lua)
-- KEYS[8] staged deadlines ZSET (may be absent: no order awaits payment)
-- KEYS[9] outbox         STREAM (see purchase.lua)
--
-- ARGV[1] sku (for the order-id prefix)
-- ARGV[2] stock   ARGV[3] sold   ARGV[4] per_user_limit ('' = none)   ARGV[5] price
-- ARGV[6] starts_at ('' = none)   ARGV[7] ends_at ('' = none)
-- ARGV[8] seq: the highest order sequence the sale ever issued, as far as JetStream knows
-- ARGV[9] key prefix of the sale's idempotency keys (`<ns>:{<sku>}:idem:`)
-- ARGV[10] the definition's revision in JetStream (see put_sale.lua)
-- ARGV[11] payment_timeout in seconds ('' = none)
-- ARGV[12] ended: when an operator ended the sale early (ms), '' = it runs by its window
-- ARGV[13..15] orders the history left paid, expired, cancelled (the sale's n_* counts)
-- ARGV[16] the queue and its admission schedule ('' = none; see put_sale.lua). The line's
--          counter is not restored: the next join reserves places above every place
--          JetStream records as handed out (queue.lua)
--
-- The idempotency keys are built from the prefix here, one per field of the staged hash (all
-- in the sale's hash slot): passing thousands of them in KEYS would only copy the same data
-- twice.
--
-- An expiry is decided by the clock, and this script reads the clock: an order the history
-- leaves pending_payment whose pay_by has passed is installed expired, in this same step,
-- exactly as transition.lua's sweeper would expire it (order_moves.lua, put in front of this
-- script): its units and its buyer's allowance return, and its `order.expired` event goes to
-- the outbox (Nats-Msg-Id `<id>.expired`; JetStream drops it as a duplicate when the lost
-- copy's own expiry event reaches the stream late). Without this, an order the sweeper had
-- expired, whose event Redis lost before the relay delivered it, and whose unit sold again,
-- would come back holding that unit: more sold than stock.
--
-- Reply: { 'restored', now_ms, replaced (1 when a copy another primary wrote was replaced),
--          orders expired here, units they returned, sold afterwards,
--          earliest pay_by still awaited ('' when none) }
--        or { 'exists' }

local sale, orders, buyers = KEYS[1], KEYS[2], KEYS[3]
local staged_orders, staged_buyers, staged_idem = KEYS[4], KEYS[5], KEYS[6]
local deadlines, staged_deadlines = KEYS[7], KEYS[8]

local primary = this_primary()
local written_by = redis.call('HGET', sale, 'primary')
if written_by == primary then
  redis.call('DEL', staged_orders, staged_buyers, staged_idem, staged_deadlines)
  return { 'exists' }
end
local replaced = 0
if redis.call('EXISTS', sale) == 1 then
  -- A copy from elsewhere: JetStream and the outbox hold everything it holds (each of its
  -- orders wrote an outbox entry in the same step, kept until JetStream acknowledged it), and
  -- the rebuild folded both.
  replaced = 1
  redis.call('DEL', sale)
end

local now = now_ms()

-- Whatever a partial loss left of the sale is replaced by what JetStream knows. An outbox that
-- survived stays: the caller folded its entries into the rebuild, and the relay still owes
-- them to JetStream.
redis.call('DEL', orders, buyers, deadlines)
local staged = { [staged_orders] = orders, [staged_buyers] = buyers,
                 [staged_deadlines] = deadlines }
-- RENAME keeps the staging key's expiry (set so an abandoned attempt cleans up after
-- itself): PERSIST, or the sale's orders, tallies and deadlines would vanish two minutes
-- after the rebuild (the chaos suite found buyers buying past their limit then).
for from, to in pairs(staged) do
  if redis.call('EXISTS', from) == 1 then
    redis.call('RENAME', from, to)
    redis.call('PERSIST', to)
  end
end

-- Idempotency keys come back with what is left of their time to live.
local idem = redis.call('HGETALL', staged_idem)
for i = 1, #idem, 2 do
  local expires, id = string.match(idem[i + 1], '^(%d+):(.*)$')
  local ttl = tonumber(expires) - now
  if ttl > 0 then redis.call('SET', ARGV[9] .. idem[i], id, 'PX', ttl) end
end
redis.call('DEL', staged_idem)

-- A new order-id prefix (the restore time) with the sequence continuing: ids issued by the
-- lost copy that never reached JetStream can then never be issued again.
local oid = string.sub(redis.sha1hex(ARGV[1]), 1, 16) .. '-' .. now
-- 'changed': a rebuilt sale counts as changed now, so its archive (archive.lua) waits a
-- full delay, as its Idempotency-Keys just came back.
redis.call('HSET', sale, 'stock', ARGV[2], 'sold', ARGV[3], 'price', ARGV[5], 'oid', oid,
           'seq', ARGV[8], 'rev', ARGV[10], 'primary', primary, 'changed', now)
local optional = { per_user_limit = ARGV[4], starts_at = ARGV[6], ends_at = ARGV[7],
                   payment_timeout = ARGV[11], ended = ARGV[12], queue = ARGV[16] }
for field, value in pairs(optional) do
  if value ~= '' then redis.call('HSET', sale, field, value) end
end
-- Zero counts stay absent, as on a sale that never moved an order.
local counts = { n_paid = ARGV[13], n_expired = ARGV[14], n_cancelled = ARGV[15] }
for field, value in pairs(counts) do
  if tonumber(value) > 0 then redis.call('HSET', sale, field, value) end
end

local k = { sale = sale, orders = orders, buyers = buyers, outbox = KEYS[9],
            deadlines = deadlines, oid = oid, now = now }
local expired = expire_due(k, now, -1)
return { 'restored', now, replaced, #expired - 2, expired[2],
         tonumber(redis.call('HGET', sale, 'sold')), expired[1] }
