-- read_orders.lua: orders of one sale as they stand, each with whether its latest event has
-- reached JetStream, in one round trip. Reads only.
--
-- KEYS[1] sale, KEYS[2] orders, KEYS[3] outbox (see purchase.lua)
-- KEYS[4] (optional) the sale's buyers hash (purchase.lua's KEYS[3]): read a buyer's newest
--         orders
-- ARGV    with KEYS[4]: ARGV[1] the buyer, ARGV[2] how many of the newest; without: the
--         order ids to read
--
-- Reply: { 'sale_missing' } when Redis does not hold the sale (the caller rebuilds it), or
--        { 'orders', id, record, delivered (1|0), id, record, delivered, ... } for the orders
--        that exist, in the order asked (a buyer's: newest first)

local sale, orders, outbox, buyers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- A copy another primary wrote may miss orders that were acknowledged: it is caught up first,
-- as for a decision (see purchase.lua).
local primary = this_primary()
local held = fields_of(sale, 'primary', 'oid')
if held.primary ~= primary then return { 'sale_missing' } end
local oid = held.oid

-- An order's id from its field in the orders hash (prelude.lua: order_field, the other way).
local function order_id(field)
  if string.find(field, '-', 1, true) then return string.sub(oid, 1, 17) .. field end
  return oid .. '-' .. field
end

local ids = ARGV
if buyers then
  -- '<units held>:<order fields>' (see purchase.lua's KEYS[3]).
  ids = {}
  local listed = string.match(redis.call('HGET', buyers, ARGV[1]) or '', '^%d+:(.*)$')
  for field in string.gmatch(listed or '', '[^,]+') do
    if #ids == tonumber(ARGV[2]) then break end
    ids[#ids + 1] = order_id(field)
  end
end

local reply = { 'orders' }
for _, id in ipairs(ids) do
  local record = redis.call('HGET', orders, order_field(oid, id))
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
