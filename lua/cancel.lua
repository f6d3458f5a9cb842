-- cancel.lua: cancel one order, exactly once, atomically.
--
-- Gives the quantity back to the stock, frees the buyer's per-user allowance, marks the order
-- cancelled and records an order.cancelled event in the outbox. A second cancel finds the
-- order already cancelled and changes nothing.
--
-- KEYS[1] sale, KEYS[2] orders, KEYS[3] buyers, KEYS[4] outbox (see purchase.lua)
-- ARGV[1] order_id
--
-- Reply: { 'cancelled' | 'already_cancelled', order_id, user_id, quantity, unit_price,
--          created_at_ms, remaining, 'cancelled' } or { 'order_not_found' } or
--        { 'sale_missing' } when Redis does not hold the sale (the caller rebuilds it first)

local sale, orders, buyers, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]

if redis.call('EXISTS', sale) == 0 then return { 'sale_missing' } end
local stored = redis.call('HGET', orders, id)
if not stored then return { 'order_not_found' } end
-- The record format of purchase.lua: status, quantity, unit_price, created_at, pay_by,
-- paid_at, event, payment_ref, user_id.
local status, q, price, created_at, pay_by, paid_at, _, payment_ref, user = string.match(stored,
  '^([%a_]+)\n(%d+)\n(%d+)\n(%d+)\n(%d*)\n(%d*)\n([%d%-]*)\n([^\n]*)\n(.*)$')
local quantity = tonumber(q)

local outcome = 'already_cancelled'
if status ~= 'cancelled' then
  outcome = 'cancelled'
  redis.call('HINCRBY', sale, 'sold', -quantity)
  if redis.call('HINCRBY', buyers, user, -quantity) <= 0 then
    redis.call('HDEL', buyers, user)
  end
  local event = redis.call('XADD', outbox, '*', 'kind', 'cancelled', 'order_id', id,
                           'user_id', user, 'quantity', q, 'unit_price', price,
                           'created_at', created_at)
  redis.call('HSET', orders, id, table.concat({ 'cancelled', q, price, created_at, pay_by,
                                                paid_at, event, payment_ref, user }, '\n'))
end

local f = redis.call('HMGET', sale, 'stock', 'sold')
return { outcome, id, user, quantity, tonumber(price), tonumber(created_at),
         tonumber(f[1]) - tonumber(f[2]), 'cancelled' }
