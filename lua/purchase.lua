-- purchase.lua: a batch of purchases of one sale, each decided atomically, in one round trip.
--
-- Redis runs a script without interleaving any other command, so everything below sees one
-- consistent sale. The purchases of a batch are decided one after the other in the order
-- given (their arrival order in the replica, see src/store/group_commit.rs), each with
-- exactly the rules a lone purchase meets: a later purchase sees what an earlier one took.
-- For each purchase every check comes before its first write, and a rejected purchase
-- touches nothing.
--
-- All keys share the sale's `{sku}` hash tag, so the script also runs on Redis Cluster.
-- KEYS[1] sale    HASH  stock, sold, per_user_limit?, price, starts_at?, ends_at?, ended?
--                       (ended early by an operator, ms), oid, seq, primary (the replication
--                       id of the primary that wrote it, see below), changed (ms of the last
--                       order written or moved, or PUT: the archive waits a while after it,
--                       see archive.lua), sealed (archive.lua)
-- KEYS[2] orders  HASH  order field -> the order record. An order's field is its id made
--                       short (32 bytes an order): the sequence number alone when the id
--                       starts with the sale's oid, else the id without the sku digest and
--                       dash every id of the sale starts with ('<ms>-<seq>': an order from
--                       before the sale's last rebuild, which gave it a new oid). The record
--                       has one field a line:
--                       status, quantity, unit_price, created_at ms, pay_by ms, paid_at ms,
--                       event (outbox id of the order's latest event), payment_ref, user_id
--                       (plain text, not cjson: a fifth of the script's cost; user_id comes
--                       last, so whatever it holds cannot shift the other fields; empty
--                       fields are unset)
-- KEYS[3] buyers  HASH  user_id  -> '<units held>:<order ids>': the units this user holds (for
--                       the per-user limit), then the fields (KEYS[2]) of the user's orders
--                       in this sale, newest first, at most LISTED, comma-separated: one
--                       field per buyer, not a key (a list key per buyer cost 250 bytes an
--                       order)
-- KEYS[4] outbox  STREAM order events not yet handed to JetStream (read by the relay)
-- KEYS[5] deadlines ZSET order_id -> pay_by ms, of the orders awaiting payment (the expiry
--                       sweeper's index, see transition.lua)
-- then, in purchase order, one STRING per purchase that carries an Idempotency-Key: the
--                       order_id the key produced
--
-- ARGV[1] seconds an idempotency key is remembered
-- then three per purchase i (ARGV[3i - 1 .. 3i + 1]):
--   user_id; quantity, an integer 1..100 (validated by the caller); the Idempotency-Key
--   itself ('' = none), carried in the order event so that a sale rebuilt from JetStream
--   still knows it
--
-- Reply: one array per purchase, in order: { outcome, ... } where outcome is one of
--   'created'  | 'replayed'  , order_id, user_id, quantity, unit_price, created_at_ms, remaining,
--                              status, pay_by_ms ('' when the sale has no payment window),
--                              earliest (1 when this new order has the sale's earliest
--                              deadline: only then must the caller add it to the sweeper's
--                              cross-sale index, see src/store/payment_due.rs)
--                              and the stream id of its order.created outbox entry: for
--                              'created' the one just written, for 'replayed' the one still
--                              waiting ('' once JetStream holds the event). The handler that
--                              confirms the event with JetStream removes it (src/events/confirm.rs),
--                              so a replay is as durable as the first answer.
--   'sold_out'               , remaining
--   'sale_inconsistent'      , stock, sold: the copy holds more sold than stock (a rebuild
--                   folded a history that sells past the stock, see src/recovery/rebuild.rs). Nothing
--                   is decided on it until a cancel, an expiry or a PUT brings sold back
--                   within stock; replays and the other refusals still answer.
--   'quantity_above_limit'   , per_user_limit
--   'sale_missing'  Redis holds no copy of the sale it can decide on: never created, lost, or
--                   written by another primary (below). The caller rebuilds it from JetStream
--                   (or answers 404) and calls again; nothing is ever decided on a sale Redis
--                   does not hold, nor on a copy that may be behind.
--   'sale_not_open' | 'user_limit_reached' | 'idempotency_conflict'

local sale, orders, buyers, outbox, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local idem_ttl = ARGV[1]
-- A buyer's list answers with the newest LISTED ids (src/domain/order.rs: LISTED_ORDERS).
-- It keeps more until it outgrows LISTED_BYTES, then drops all but the newest LISTED: a buyer
-- with thousands of orders (/kill's anonymous one) pays for that cut once in many purchases,
-- not in each (a cut each time cost a quarter of the script's throughput).
local LISTED, LISTED_BYTES = 100, 1024
local count = (#ARGV - 1) / 3
-- status, quantity, unit_price, created_at, pay_by, then (skipped) paid_at, event, (skipped)
-- payment_ref, and user_id of an order record (see KEYS[2]).
local ORDER_RECORD = '^([%a_]+)\n(%d+)\n(%d+)\n(%d+)\n(%d*)\n%d*\n([%d%-]*)\n[^\n]*\n(.*)$'

-- Redis's clock, not the replica's: every replica then agrees on the sale window.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- The replication id of the primary running this script. A sale records the one that wrote
-- it (put_sale.lua, restore.lua); any other means this copy came from elsewhere: a replica
-- promoted after a failover (asynchronous replication may have missed acknowledged writes),
-- a slot moved to another master, a restart from a dump. Such a copy may be behind what was
-- sold, so it counts as missing: the caller catches the sale up from JetStream first.
-- '/2' is the layout of the sale's keys (src/store/mod.rs: LAYOUT): a sale an earlier layout
-- wrote counts as a copy from elsewhere, and is rebuilt from the record in this one.
local primary = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') .. '/2'
local f = redis.call('HMGET', sale, 'stock', 'sold', 'per_user_limit', 'price',
                     'starts_at', 'ends_at', 'oid', 'payment_timeout', 'primary', 'ended')
local stock, sold = tonumber(f[1]), tonumber(f[2])
if f[9] ~= primary then stock = nil end
local limit, price = tonumber(f[3]), tonumber(f[4]) or 0
local starts_at, ends_at, oid = tonumber(f[5]), tonumber(f[6]), f[7]
local payment_timeout = tonumber(f[8])
-- 'sale_not_open' is decided once: the batch shares one instant.
local open = not ((starts_at and now < starts_at) or (ends_at and now >= ends_at) or f[10])

-- An order's field in the orders hash (KEYS[2]).
local function order_field(id)
  if string.sub(id, 1, #oid + 1) == oid .. '-' then return string.sub(id, #oid + 2) end
  return string.sub(id, 18)
end

-- Whether the batch wrote an order: then the sale's 'changed' time moves, once per batch.
local bought = false

-- One purchase, against the sale as the purchases before it in the batch left it.
local function decide(user, quantity, idem, idem_key)
  -- 1. Idempotency replay comes before the window and stock checks: a retry of an accepted
  --    purchase must find its order even after the sale closed or sold out.
  if idem then
    local id = redis.call('GET', idem)
    if id then
      local stored = redis.call('HGET', orders, order_field(id))
      if stored then
        local status, q, p, c, pay_by, event, u = string.match(stored, ORDER_RECORD)
        if u ~= user or tonumber(q) ~= quantity then
          return { 'idempotency_conflict' }
        end
        -- The order's latest event, if it still waits, is its order.created only while the
        -- order has not ended; an ended order's creation is in JetStream already.
        local waiting = ''
        if event ~= '' and (status == 'created' or status == 'pending_payment')
            and #redis.call('XRANGE', outbox, event, event) > 0 then
          waiting = event
        end
        return { 'replayed', id, u, tonumber(q), tonumber(p), tonumber(c),
                 math.max(stock - sold, 0), status, pay_by, 0, waiting }
      end
    end
  end

  -- 2. Sale window: [starts_at, ends_at).
  if not open then return { 'sale_not_open' } end

  -- 3. Per-user limit, counting what the user already holds.
  local buyer = redis.call('HGET', buyers, user)
  local held, listed = 0, ''
  if buyer then
    held, listed = string.match(buyer, '^(%d+):(.*)$')
    held = tonumber(held)
  end
  if limit then
    if quantity > limit then return { 'quantity_above_limit', limit } end
    if held + quantity > limit then return { 'user_limit_reached' } end
  end

  -- 4. Stock, all or nothing: sold never exceeds stock.
  if sold > stock then return { 'sale_inconsistent', stock, sold } end
  if sold + quantity > stock then return { 'sold_out', stock - sold } end

  -- Commit. Nothing above wrote; everything below always runs to the end, and leaves the
  -- sale whole after each purchase.
  bought = true
  sold = redis.call('HINCRBY', sale, 'sold', quantity)
  local seq = redis.call('HINCRBY', sale, 'seq', 1)
  local id = oid .. '-' .. seq
  local field = tostring(seq)
  local newest = field
  if #listed > LISTED_BYTES then
    -- The oldest go, past LISTED ids: cut at the LISTED - 1'th comma of the old list.
    local cut, at = 0, 0
    for _ = 1, LISTED - 1 do
      at = string.find(listed, ',', at + 1, true)
      if not at then break end
      cut = at
    end
    if at then listed = string.sub(listed, 1, cut - 1) end
  end
  if listed ~= '' then newest = field .. ',' .. listed end
  redis.call('HSET', buyers, user, (held + quantity) .. ':' .. newest)
  if idem then redis.call('SET', idem, id, 'EX', idem_ttl) end
  -- With a payment window the order holds its units until pay_by (Redis's clock), then
  -- transition.lua expires it and returns them unless it was paid first.
  local status, pay_by, earliest = 'created', '', 0
  if payment_timeout then
    status, pay_by = 'pending_payment', now + payment_timeout * 1000
    redis.call('ZADD', deadlines, pay_by, id)
    -- An earlier deadline of this sale is in the index already, and with it this one.
    if redis.call('ZRANGE', deadlines, 0, 0)[1] == id then earliest = 1 end
  end
  -- The outbox entry is written in the same atomic step as the stock: an order accepted
  -- here can never be missing from what the relay hands to JetStream.
  local event = redis.call('XADD', outbox, '*', 'kind', 'created', 'order_id', id,
                           'user_id', user, 'quantity', quantity, 'unit_price', price,
                           'created_at', now, 'idem', idem_key, 'pay_by', pay_by)
  -- Integers below 2^53 print in full ('%.14g' covers ms timestamps and prices up to 10^14).
  redis.call('HSET', orders, field, status .. '\n' .. quantity .. '\n' .. price .. '\n' .. now
             .. '\n' .. pay_by .. '\n\n' .. event .. '\n\n' .. user)
  return { 'created', id, user, quantity, price, now, stock - sold, status, pay_by, earliest,
           event }
end

local replies = {}
local next_idem = 6
for i = 1, count do
  local user, quantity, idem_key = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), ARGV[3 * i + 1]
  local idem
  if idem_key ~= '' then
    idem, next_idem = KEYS[next_idem], next_idem + 1
  end
  -- 0. Existence. Every sale, the default one included, is written by put_sale.lua or
  --    restore.lua; a missing hash, or one another primary wrote, means the caller must
  --    consult JetStream first.
  if not stock then
    replies[i] = { 'sale_missing' }
  else
    replies[i] = decide(user, quantity, idem, idem_key)
  end
end
if bought then redis.call('HSET', sale, 'changed', now) end
return replies
