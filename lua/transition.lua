-- transition.lua: an order leaves pending_payment (or created), exactly once, atomically.
--
--   pending_payment --pay--> paid          (until pay_by)
--   pending_payment --expire--> expired    (after pay_by; units back)
--   created | pending_payment --cancel--> cancelled   (admin; units back)
--
-- Payment, expiry and cancellation are decided here, by one script on Redis's clock, so a
-- payment and an expiry (or a cancel) arriving at the same instant end in exactly one of
-- them: whichever runs first changes the status, and the other finds it changed. A pending
-- order whose pay_by has passed is expired by whichever call meets it first (a late pay, a
-- cancel, or the sweeper). Each transition writes its event to the outbox in the same step,
-- so every order's events reach JetStream once each, in order.
--
-- The order record and the moves (load_order, move_order, expire_due, ...) come from
-- order_moves.lua, which src/store/mod.rs puts in front of this script.
--
-- KEYS[1] sale, KEYS[2] orders, KEYS[3] buyers, KEYS[4] outbox, KEYS[5] deadlines
--         (see purchase.lua)
-- ARGV[1] 'pay'    ARGV[2] order_id, ARGV[3] payment_ref (1-128 printable, no newline)
--         'cancel' ARGV[2] order_id
--         'expire' ARGV[2] how many overdue orders at most (the sweeper)
--
-- Reply, for 'pay' and 'cancel': { outcome, order_id, record, remaining, delivered (1|0),
--   outbox id of the order's latest event ('' when none) },
-- where outcome is
--   'paid' | 'already_paid' | 'cancelled' | 'already_cancelled' | 'order_expired' |
--   'expired' (overdue, and expired by this call: its units are back), or
--   { 'not_payable' | 'order_cancelled' | 'payment_conflict' | 'order_paid' |
--     'order_not_found' | 'sale_missing' | 'sale_archived' }
-- for 'expire': { 'expired', next pay_by ms or '', units returned, lag ms of each expiry... }

local sale, orders, buyers, outbox, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local action = ARGV[1]

-- A copy another primary wrote may be behind what was acknowledged: it counts as missing,
-- and the caller catches it up from JetStream first (see purchase.lua).
local primary = this_primary()
local held = fields_of(sale, 'primary', 'oid', 'sealed')
if held.primary ~= primary then return { 'sale_missing' } end
-- A sale being archived (archive.lua) moves no order: what it holds is what JetStream will
-- keep of it. (It has no order awaiting payment, so the sweeper has nothing to expire.)
if held.sealed and action ~= 'expire' then return { 'sale_archived' } end

local now = now_ms()

local k = { sale = sale, orders = orders, buyers = buyers, outbox = outbox,
            deadlines = deadlines, oid = held.oid, now = now }

if action == 'expire' then
  local reply = expire_due(k, now, tonumber(ARGV[2]))
  table.insert(reply, 1, 'expired')
  return reply
end

local id = ARGV[2]
local order = load_order(k, id)
if not order then return { 'order_not_found' } end

-- The order as it stands, the units left, and whether its latest event has left the outbox
-- (reached JetStream): never yet for an event this call wrote.
local function answer(outcome)
  local f = fields_of(sale, 'stock', 'sold')
  local waiting = order.event ~= '' and #redis.call('XRANGE', outbox, order.event, order.event) > 0
  -- Never below 0, also on a copy that holds more sold than stock (see purchase.lua).
  return { outcome, id, order_record(order), math.max(tonumber(f.stock) - tonumber(f.sold), 0),
           waiting and 0 or 1,
           order.event }
end

if overdue(order, now) then
  expire_order(k, id, order)
  return answer('expired')
end

local status = order.status
if action == 'pay' then
  local payment_ref = ARGV[3]
  if status == 'pending_payment' then
    order.paid_at, order.payment_ref = now, payment_ref
    move_order(k, id, order, 'paid')
    return answer('paid')
  elseif status == 'paid' then
    if order.payment_ref == payment_ref then return answer('already_paid') end
    return { 'payment_conflict' }
  elseif status == 'expired' then
    return answer('order_expired')
  elseif status == 'cancelled' then
    return { 'order_cancelled' }
  end
  return { 'not_payable' }
elseif action == 'cancel' then
  if status == 'created' or status == 'pending_payment' then
    release_order(k, order)
    move_order(k, id, order, 'cancelled')
    return answer('cancelled')
  elseif status == 'cancelled' then
    return answer('already_cancelled')
  elseif status == 'expired' then
    return answer('order_expired')
  end
  return { 'order_paid' }
end
return redis.error_reply('transition.lua: unknown action ' .. tostring(action))
