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

local function load_order(k, id)
  local stored = redis.call('HGET', k.orders, order_field(k.oid, id))
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

-- An event's line in an outbox entry: the fields of the order after the move, tab-separated,
-- user_id last (no field holds a control character, and whatever user_id holds cannot
-- shift the others). purchase.lua writes the same line. An entry is
-- `kind <created|paid|expired|cancelled> events <line>\n<line>...`: the events of one
-- call, one JetStream message (src/store/outbox.rs reads it).
--   order_id, quantity, unit_price, created_at ms, pay_by ms, paid_at ms, Idempotency-Key
--   (in created events), payment_ref, user_id
local function event_line(id, order)
  return id .. '\t' .. order.quantity .. '\t' .. order.unit_price .. '\t' .. order.created_at
         .. '\t' .. order.pay_by .. '\t' .. order.paid_at .. '\t\t' .. order.payment_ref .. '\t'
         .. order.user_id
end

-- Moves each of `moved` ({ id, order } pairs) to `status`, records their events as one
-- outbox entry and saves them. The sale counts its orders by where they ended (n_paid,
-- n_expired, n_cancelled) for the operator's view; pending ones are the deadlines index,
-- all of them the orders hash.
local function move_orders(k, moved, status)
  if #moved == 0 then return end
  local lines, gone = {}, {}
  for i, m in ipairs(moved) do
    m.order.status = status
    lines[i] = event_line(m.id, m.order)
    gone[i] = m.id
  end
  redis.call('HINCRBY', k.sale, 'n_' .. status, #moved)
  -- The archive waits a while after the last change (archive.lua).
  redis.call('HSET', k.sale, 'changed', k.now)
  local event = redis.call('XADD', k.outbox, '*', 'kind', status,
                           'events', table.concat(lines, '\n'))
  local records = {}
  for _, m in ipairs(moved) do
    m.order.event = event
    records[#records + 1] = order_field(k.oid, m.id)
    records[#records + 1] = order_record(m.order)
  end
  redis.call('HSET', k.orders, unpack(records))
  redis.call('ZREM', k.deadlines, unpack(gone))
end

local function move_order(k, id, order, status)
  move_orders(k, { { id = id, order = order } }, status)
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

-- Expires up to `at_most` orders whose pay_by has passed at `now`, earliest first, as one
-- outbox entry. Returns { next pay_by ms or '', units returned, lag ms of each expiry... }.
local function expire_due(k, now, at_most)
  local due = redis.call('ZRANGEBYSCORE', k.deadlines, '-inf', '(' .. now, 'LIMIT', 0, at_most)
  local reply = { '', 0 }
  local expired = {}
  for _, id in ipairs(due) do
    local order = load_order(k, id)
    if order and overdue(order, now) then
      release_order(k, order)
      expired[#expired + 1] = { id = id, order = order }
      reply[2] = reply[2] + tonumber(order.quantity)
      reply[#reply + 1] = now - tonumber(order.pay_by)
    else
      -- Paid, cancelled or gone: nothing is due for it any more.
      redis.call('ZREM', k.deadlines, id)
    end
  end
  move_orders(k, expired, 'expired')
  local next_due = redis.call('ZRANGE', k.deadlines, 0, 0, 'WITHSCORES')
  if next_due[2] then reply[1] = next_due[2] end
  return reply
end
