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
-- KEYS[4] outbox  STREAM order events not yet handed to JetStream (read by the relay): one
--                       entry a call, holding the events of every order it made (see
--                       order_moves.lua: event_line)
-- KEYS[5] deadlines ZSET order_id -> pay_by ms, of the orders awaiting payment (the expiry
--                       sweeper's index, see transition.lua)
-- then, in purchase order, one STRING per purchase that carries an Idempotency-Key: the
--                       order_id the key produced
--
-- ARGV[1] seconds an idempotency key is remembered
-- then four per purchase i (ARGV[4i - 2 .. 4i + 1]):
--   user_id; quantity, an integer 1..100 (validated by the caller); the Idempotency-Key
--   itself ('' = none), carried in the order event so that a sale rebuilt from JetStream
--   still knows it; '1' when the order goes on the buyer's list, '0' when not (/kill's
--   anonymous buyer: the old app kept no buyer, and one list of every order cost its cut),
--   followed by '@<place>' when the buyer holds a queue token for that place in the sale's
--   line (src/http/queue_tokens.rs checked its signature: it is the buyer's)
--
-- Reply: { shared, answered_at, answers }. shared is what every order this call made has in
--   common: { oid, unit_price, created_at_ms, status, pay_by_ms ('' when the sale has no payment
--   window), the outbox entry's id, earliest (1 when the call's first new order has the sale's
--   earliest deadline: only then must the caller add it to the sweeper's cross-sale index,
--   see src/store/payment_due.rs), first_seq (the first new order's), stock, sold before the
--   call },
--   or {} when it made none. A purchase that made an order has no reply of its own (a reply
--   each cost a tenth of the script): the k-th new order of the call (from 0) has seq
--   first_seq + k, and leaves stock - sold - the units of the new orders up to it. Every other
--   purchase has its index (1-based) in answered_at and its reply at the same place in
--   answers: { outcome, ... } where outcome is one of
--   'replayed'               , order_id, user_id, quantity, unit_price, created_at_ms, remaining,
--                              status, pay_by_ms, and the stream id of the outbox entry
--                              still holding its order.created ('' once JetStream holds it;
--                              this call's entry for an order this call made). The handler that
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
--   'not_admitted'           , the instant (ms) the place is admitted ('' while paused before it)
--   'sale_not_open' | 'user_limit_reached' | 'idempotency_conflict' | 'admission_expired'
--   | 'queue_token_required' (a sale with a queue: see the waiting room below)

local sale, orders, buyers, outbox, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local idem_ttl = ARGV[1]
-- A buyer's list answers with the newest LISTED ids (src/domain/order.rs: LISTED_ORDERS).
-- It keeps more until it outgrows LISTED_BYTES, then drops all but the newest LISTED: a buyer
-- with thousands of orders pays for that cut once in many purchases, not in each.
local LISTED, LISTED_BYTES = 100, 1024
local count = (#ARGV - 1) / 4
-- status, quantity, unit_price, created_at, pay_by, then (skipped) paid_at, event, (skipped)
-- payment_ref, and user_id of an order record (see KEYS[2]).
local ORDER_RECORD = '^([%a_]+)\n(%d+)\n(%d+)\n(%d+)\n(%d*)\n%d*\n([%d%-]*)\n[^\n]*\n(.*)$'

local now = now_ms()
local f = fields_of(sale, 'stock', 'sold', 'per_user_limit', 'price', 'starts_at', 'ends_at',
                    'oid', 'payment_timeout', 'primary', 'ended', 'seq', 'queue')
local stock, sold = tonumber(f.stock), tonumber(f.sold)
-- A copy another primary wrote counts as missing (prelude.lua: this_primary).
if f.primary ~= this_primary() then stock = nil end
local limit, price = tonumber(f.per_user_limit), tonumber(f.price) or 0
local starts_at, ends_at, oid = tonumber(f.starts_at), tonumber(f.ends_at), f.oid
local payment_timeout = tonumber(f.payment_timeout)
local seq = tonumber(f.seq) or 0
local first_seq, sold_before = seq + 1, sold
-- 'sale_not_open' is decided once: the batch shares one instant.
local open = not ((starts_at and now < starts_at) or (ends_at and now >= ends_at) or f.ended)
-- The waiting room (src/domain/queue.rs): a buyer buys only while its place is admitted.
local queue = queue_of(f.queue)
-- Every order of the call shares its instant, its price and so its payment deadline.
local status, pay_by = 'created', ''
if payment_timeout then status, pay_by = 'pending_payment', now + payment_timeout * 1000 end

-- The fields every order of the call shares, as text once (a number printed in each
-- purchase's line and record cost more than the rest of them).
local line_middle = '\t' .. price .. '\t' .. now .. '\t' .. pay_by .. '\t\t'
local record_middle = '\n' .. price .. '\n' .. now .. '\n' .. pay_by .. '\n\n'

-- What this call decided, written once at its end (one command each, not one an order):
-- the orders made (their event lines, records, ids), and the buyers they changed.
-- Flat tables, no table an order: a table per order or buyer cost a tenth of the script.
local lines = {}        -- the outbox entry's event lines (order_moves.lua: event_line)
-- An order's id is id_head .. its field (its seq).
local id_head = oid and (oid .. '-')
local made, made_fields, made_quantities, made_users = 0, {}, {}, {}
local made_with_key = {} -- order id -> its index in made_*, for orders bought with a key
local waiting_here = {} -- replies of replays of an order this call made (its entry waits)
local held_of, listed_of, new_of = {}, {}, {} -- a buyer's units, old list, this call's fields
local changed_buyers = {}

-- The buyer's units as this call left them: read from Redis once a call.
local function held_by(user)
  local held = held_of[user]
  if held then return held end
  held = 0
  local stored = redis.call('HGET', buyers, user)
  if stored then
    local units, listed = string.match(stored, '^(%d+):(.*)$')
    held, listed_of[user] = tonumber(units), listed
  end
  held_of[user] = held
  return held
end

-- One purchase, against the sale as the purchases before it in the batch left it.
-- `units` is the quantity as the caller wrote it: printed as given, not converted back.
-- nil when it made an order, else the purchase's answer (see Reply above).
local function decide(user, quantity, units, idem, idem_key, listed, place)
  -- 1. Idempotency replay comes before the window and stock checks: a retry of an accepted
  --    purchase must find its order even after the sale closed or sold out.
  if idem then
    local id = redis.call('GET', idem)
    if id then
      local here = made_with_key[id]
      if here then
        -- Made earlier in this very call: its record and entry are written at the end.
        if made_users[here] ~= user or made_quantities[here] ~= units then
          return { 'idempotency_conflict' }
        end
        local reply = { 'replayed', id, user, quantity, price, now, math.max(stock - sold, 0),
                        status, pay_by, '' }
        waiting_here[#waiting_here + 1] = reply
        return reply
      end
      local stored = redis.call('HGET', orders, order_field(oid, id))
      if stored then
        local s, q, p, c, p_by, event, u = string.match(stored, ORDER_RECORD)
        if u ~= user or tonumber(q) ~= quantity then
          return { 'idempotency_conflict' }
        end
        -- The order's latest event, if it still waits, is its order.created only while the
        -- order has not ended; an ended order's creation is in JetStream already.
        local waiting = ''
        if event ~= '' and (s == 'created' or s == 'pending_payment')
            and #redis.call('XRANGE', outbox, event, event) > 0 then
          waiting = event
        end
        return { 'replayed', id, u, tonumber(q), tonumber(p), tonumber(c),
                 math.max(stock - sold, 0), s, p_by, waiting }
      end
    end
  end

  -- 2. Sale window: [starts_at, ends_at).
  if not open then return { 'sale_not_open' } end

  -- 3. The waiting room: the buyer's place is admitted and its admission has not lapsed.
  if queue then
    if not place then return { 'queue_token_required' } end
    local at = admit_time(queue.segments, place)
    if not at or now < at then return { 'not_admitted', at or '' } end
    if now >= at + queue.admission then return { 'admission_expired' } end
  end

  -- 4. Per-user limit, counting what the user already holds.
  local held = held_by(user)
  if limit then
    if quantity > limit then return { 'quantity_above_limit', limit } end
    if held + quantity > limit then return { 'user_limit_reached' } end
  end

  -- 5. Stock, all or nothing: sold never exceeds stock.
  if sold > stock then return { 'sale_inconsistent', stock, sold } end
  if sold + quantity > stock then return { 'sold_out', stock - sold } end

  -- Commit, in this call's tables: nothing above changed anything, and the end of the
  -- script writes what these hold.
  sold, seq = sold + quantity, seq + 1
  local field = tostring(seq)
  made = made + 1
  local n = made
  made_fields[n], made_quantities[n], made_users[n] = field, units, user
  held_of[user] = held + quantity
  if listed then
    -- Newest first.
    local new = new_of[user]
    new_of[user] = new and (field .. ',' .. new) or field
  end
  if not changed_buyers[user] then
    changed_buyers[user] = true
    changed_buyers[#changed_buyers + 1] = user
  end
  if idem then
    local id = id_head .. field
    redis.call('SET', idem, id, 'EX', idem_ttl)
    made_with_key[id] = n
  end
  lines[n] = id_head .. field .. '\t' .. units .. line_middle .. idem_key .. '\t\t' .. user
  return nil
end

local answered_at, answers = {}, {}
local next_idem = 6
for i = 1, count do
  local at = 4 * i - 2
  local user, quantity, idem_key = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local idem
  if idem_key ~= '' then
    idem, next_idem = KEYS[next_idem], next_idem + 1
  end
  -- 0. Existence. Every sale, the default one included, is written by put_sale.lua or
  --    restore.lua; a missing hash, or one another primary wrote, means the caller must
  --    consult JetStream first.
  local answer
  if not stock then
    answer = { 'sale_missing' }
  else
    local listing = ARGV[at + 3]
    local place = queue and tonumber(string.match(listing, '@(%d+)$'))
    answer = decide(user, quantity, ARGV[at + 1], idem, idem_key, string.sub(listing, 1, 1) == '1', place)
  end
  if answer then
    answered_at[#answered_at + 1] = i
    answers[#answers + 1] = answer
  end
end
if made == 0 then return { {}, answered_at, answers } end

-- The writes of the orders made, one command each for all of them. The outbox entry is
-- written in the same atomic step as the stock: an order accepted here can never be missing
-- from what the relay hands to JetStream.
local event = redis.call('XADD', outbox, '*', 'kind', 'created', 'events', table.concat(lines, '\n'))
local records = {}
-- Integers below 2^53 print in full ('%.14g' covers ms timestamps and prices up to 10^14).
local record_head, record_tail = status .. '\n', record_middle .. event .. '\n\n'
for i = 1, made do
  records[2 * i - 1] = made_fields[i]
  records[2 * i] = record_head .. made_quantities[i] .. record_tail .. made_users[i]
end
for _, reply in ipairs(waiting_here) do reply[10] = event end
redis.call('HSET', orders, unpack(records))
local buyer_fields = {}
for i, user in ipairs(changed_buyers) do
  local list = listed_of[user] or ''
  local new = new_of[user]
  if new then
    -- Newest first: this call's, then the list as it stood.
    if list ~= '' then list = new .. ',' .. list else list = new end
    if #list > LISTED_BYTES then
      -- The oldest go, past LISTED ids: cut at the LISTED'th comma.
      local at = 0
      for _ = 1, LISTED do
        at = string.find(list, ',', at + 1, true)
        if not at then break end
      end
      if at then list = string.sub(list, 1, at - 1) end
    end
  end
  buyer_fields[2 * i - 1] = user
  buyer_fields[2 * i] = held_of[user] .. ':' .. list
end
redis.call('HSET', buyers, unpack(buyer_fields))
local earliest = 0
-- With a payment window the orders hold their units until pay_by (Redis's clock), then
-- transition.lua expires them and returns them unless they were paid first.
if payment_timeout then
  -- All of this call's orders share one deadline: only the first can be the sale's earliest
  -- (then the caller must add it to the sweeper's cross-sale index, see
  -- src/store/payment_due.rs); an equal one already there stands for it.
  local first = redis.call('ZRANGE', deadlines, 0, 0, 'WITHSCORES')
  if not first[2] or tonumber(first[2]) > pay_by then earliest = 1 end
  local due = {}
  for i = 1, made do
    due[2 * i - 1] = pay_by
    due[2 * i] = id_head .. made_fields[i]
  end
  redis.call('ZADD', deadlines, unpack(due))
end
-- The sale's counters once a call; 'changed' lets the archive wait a while after it.
redis.call('HSET', sale, 'sold', sold, 'seq', seq, 'changed', now)
return { { oid, price, now, status, pay_by, event, earliest, first_seq, stock, sold_before },
         answered_at, answers }
