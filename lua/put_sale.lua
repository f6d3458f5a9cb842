-- put_sale.lua: create a sale or replace its settings, atomically with respect to purchases.
--
-- A replace keeps what purchases own (sold, the order-id prefix and sequence) and refuses to
-- set stock below what is already sold, so the invariant sold <= stock holds across updates.
--
-- KEYS[1] sale HASH (see purchase.lua)
-- ARGV[1] sku (for the order-id prefix of a new sale)
-- ARGV[2] stock
-- ARGV[3] per_user_limit, '' = unlimited
-- ARGV[4] price in minor units
-- ARGV[5] starts_at in ms since the epoch, '' = open from now
-- ARGV[6] ends_at in ms since the epoch, '' = never closes
-- ARGV[7] '1' when JetStream held a definition of this sale before this PUT: then a missing
--         hash means Redis lost the sale, which must be rebuilt, never created afresh (as is
--         a copy another primary wrote, see purchase.lua)
-- ARGV[8] the revision of this definition in JetStream: a PUT whose revision is older than
--         the one Redis holds lost a race with a later PUT and changes nothing, so Redis and
--         JetStream end with the same definition
-- ARGV[9] payment_timeout in seconds, '' = an order is final when accepted
-- ARGV[10] ended: when an operator ended the sale early (ms), '' = it runs by its window
-- ARGV[11] queue: '<admit_per_sec>;<opens_before_secs>;<admission_secs>;<since>:<rate>,…'
--          (src/domain/queue.rs: the waiting room and its admission schedule), '' = none
--
-- Reply: { 'created' | 'replaced', sold, now_ms } or { 'stock_below_sold', sold } or
--        { 'sale_missing' } or { 'superseded' }

local sale = KEYS[1]
local stock = tonumber(ARGV[2])
-- The sale records the primary that wrote it (here, restore.lua); a copy another wrote counts
-- as missing (prelude.lua: this_primary).
local primary = this_primary()
local now = now_ms()

local outcome = 'replaced'
local f = fields_of(sale, 'sold', 'rev', 'primary')
local sold = tonumber(f.sold)
if sold and f.primary ~= primary then return { 'sale_missing' } end
if sold and tonumber(f.rev or 0) > tonumber(ARGV[8]) then return { 'superseded' } end
if sold then
  if stock < sold then return { 'stock_below_sold', sold } end
elseif ARGV[7] == '1' then
  return { 'sale_missing' }
else
  outcome, sold = 'created', 0
  -- Same order-id prefix rule as purchase.lua: sku digest, then creation time.
  local oid = string.sub(redis.sha1hex(ARGV[1]), 1, 16) .. '-' .. now
  redis.call('HSET', sale, 'sold', 0, 'seq', 0, 'oid', oid, 'primary', primary)
end

-- A PUT is a change (the archive waits a while after the last one), and a PUT reopens a
-- sale being archived (archive.lua): the archive then leaves it alone.
redis.call('HSET', sale, 'stock', stock, 'price', ARGV[4], 'rev', ARGV[8], 'changed', now)
redis.call('HDEL', sale, 'sealed')
-- Optional settings: absent in the request means absent in the sale (a PUT replaces them).
local optional = { per_user_limit = ARGV[3], starts_at = ARGV[5], ends_at = ARGV[6],
                   payment_timeout = ARGV[9], ended = ARGV[10], queue = ARGV[11] }
for field, value in pairs(optional) do
  if value == '' then redis.call('HDEL', sale, field) else redis.call('HSET', sale, field, value) end
end

return { outcome, sold, now }
