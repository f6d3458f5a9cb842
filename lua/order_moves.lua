-- order_moves.lua: the order record and the moves that end an order, shared by
-- transition.lua and restore.lua. It is not a script of its own: src/store/mod.rs puts it
-- in front of each of them (Redis scripts cannot include one another), so both decide an
-- expiry by the very same code.
--
-- `k` is the sale's keys: { sale, orders, buyers, outbox, deadlines } (see purchase.lua),
-- `k.oid` the sale's current order-id prefix (its hash's oid field), and `k.now` the script's
-- time (ms, Redis's clock).

-- The record format of purchase.lua: status, quantity, unit_price, created_at, pay_by,
-- paid_at, event, payment_ref, user_id (last: whatever it holds cannot shift the others).
local FIELDS = { 'status', 'quantity', 'unit_price', 'created_at', 'pay_by', 'paid_at',
                 'event', 'payment_ref', 'user_id' }
local RECORD = '^([%a_]+)\n(%d+)\n(%d+)\n(%d+)\n(%d*)\n(%d*)\n([%d%-]*)\n([^\n]*)\n(.*)$'

-- An order's field in its sale's orders hash (see purchase.lua's KEYS[2]).
local function order_field(k, id)
  if string.sub(id, 1, #k.oid + 1) == k.oid .. '-' then return string.sub(id, #k.oid + 2) end
  return string.sub(id, 18)
end

local function load_order(k, id)
  local stored = redis.call('HGET', k.orders, order_field(k, id))
  if not stored then return nil end
  local values = { string.match(stored, RECORD) }
  local order = {}
  for i, field in ipairs(FIELDS) do order[field] = values[i] end
  return order
end

local function order_record(order)
  local values = {}
  for i, field in ipairs(FIELDS) do values[i] = order[field] end
  return table.concat(values, '\n')
end

-- Moves the order to `status`, records the event of the move in the outbox and saves it.
-- The sale counts its orders by where they ended (n_paid, n_expired, n_cancelled) for the
-- operator's view; pending ones are the deadlines index, all of them the orders hash.
local function move_order(k, id, order, status)
  order.status = status
  redis.call('HINCRBY', k.sale, 'n_' .. status, 1)
  -- The archive waits a while after the last change (archive.lua).
  redis.call('HSET', k.sale, 'changed', k.now)
  order.event = redis.call('XADD', k.outbox, '*', 'kind', status, 'order_id', id,
                           'user_id', order.user_id, 'quantity', order.quantity,
                           'unit_price', order.unit_price, 'created_at', order.created_at,
                           'pay_by', order.pay_by, 'paid_at', order.paid_at,
                           'payment_ref', order.payment_ref)
  redis.call('HSET', k.orders, order_field(k, id), order_record(order))
  redis.call('ZREM', k.deadlines, id)
end

-- Gives the order's units back to the sale and the buyer's allowance back to the buyer.
local function release_order(k, order)
  local quantity = tonumber(order.quantity)
  redis.call('HINCRBY', k.sale, 'sold', -quantity)
  -- '<units held>:<order fields>' (see purchase.lua): the count goes down, the list stays,
  -- as the buyer's list shows ended orders too.
  -- (A script stops at an error without undoing what it wrote: no field, nothing to lower.)
  local held, listed = string.match(redis.call('HGET', k.buyers, order.user_id) or '', '^(%d+):(.*)$')
  if held then
    redis.call('HSET', k.buyers, order.user_id, (tonumber(held) - quantity) .. ':' .. listed)
  end
end

-- pay_by < now: an order may still be paid at its pay_by itself.
local function overdue(order, now)
  return order.status == 'pending_payment' and now > tonumber(order.pay_by)
end

local function expire_order(k, id, order)
  release_order(k, order)
  move_order(k, id, order, 'expired')
end

-- Expires up to `at_most` orders whose pay_by has passed at `now`, earliest first.
-- Returns { next pay_by ms or '', units returned, lag ms of each expiry... }.
local function expire_due(k, now, at_most)
  local due = redis.call('ZRANGEBYSCORE', k.deadlines, '-inf', '(' .. now, 'LIMIT', 0, at_most)
  local reply = { '', 0 }
  for _, id in ipairs(due) do
    local order = load_order(k, id)
    if order and overdue(order, now) then
      expire_order(k, id, order)
      reply[2] = reply[2] + tonumber(order.quantity)
      reply[#reply + 1] = now - tonumber(order.pay_by)
    else
      -- Paid, cancelled or gone: nothing is due for it any more.
      redis.call('ZREM', k.deadlines, id)
    end
  end
  local next_due = redis.call('ZRANGE', k.deadlines, 0, 0, 'WITHSCORES')
  if next_due[2] then reply[1] = next_due[2] end
  return reply
end
