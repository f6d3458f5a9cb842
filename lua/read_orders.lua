-- read_orders.lua: orders of one sale as they stand, each with whether its latest event has
-- reached JetStream, in one round trip. Reads only.
--
-- KEYS[1] sale, KEYS[2] orders, KEYS[3] outbox (see purchase.lua)
-- KEYS[4] (optional) a buyer's order list (purchase.lua's KEYS[5]): read its newest orders
-- ARGV    with KEYS[4]: ARGV[1] how many of the newest; without: the order ids to read
--
-- Reply: { 'sale_missing' } when Redis does not hold the sale (the caller rebuilds it), or
--        { 'orders', id, record, delivered (1|0), id, record, delivered, ... } for the orders
--        that exist, in the order asked (a buyer's: newest first)

local sale, orders, outbox, buyer_orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- A copy another primary wrote may miss orders that were acknowledged: it is caught up first,
-- as for a decision (see purchase.lua).
local primary = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
if redis.call('HGET', sale, 'primary') ~= primary then return { 'sale_missing' } end

local ids = ARGV
if buyer_orders then ids = redis.call('LRANGE', buyer_orders, 0, tonumber(ARGV[1]) - 1) end

local reply = { 'orders' }
for _, id in ipairs(ids) do
  local record = redis.call('HGET', orders, id)
  if record then
    -- The 7th field is the outbox id of the order's latest event; empty (a rebuilt order)
    -- or gone from the outbox (the relay removes what JetStream acknowledged) = delivered.
    local event = string.match(record, '^[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n([^\n]*)\n')
    local delivered = 1
    if event and event ~= '' and #redis.call('XRANGE', outbox, event, event) > 0 then
      delivered = 0
    end
    reply[#reply + 1] = id
    reply[#reply + 1] = record
    reply[#reply + 1] = delivered
  end
end
return reply
