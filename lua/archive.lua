-- archive.lua: a sale that ended and settled leaves Redis, in two steps around the record.
--
-- The archiver (src/recovery/archive.rs) runs in every replica without a lock:
--   1. 'seal'   here: the sale is archivable now → it is sealed at the revision of the
--               definition it holds; a sealed sale moves no order (transition.lua), and
--               takes no purchase anyway (it is closed, ended or sold out, and only a move
--               could give stock back).
--   2. the definition in JetStream is updated to say archived, compare-and-set on that
--      revision: a PUT that wrote a later one makes it fail (the PUT unseals the sale, and
--      so does the next pass, finding the later definition: 'unseal' here).
--   3. 'drop'   here: the sale's keys go, if it is still sealed at that revision. A PUT
--               (put_sale.lua) unseals what it reopens, so a sale reopened at the archive
--               moment keeps its keys.
-- Each step is idempotent: a replica that stops half-way leaves what the next pass finishes.
--
-- KEYS[1] sale, KEYS[2] orders, KEYS[3] buyers, KEYS[4] outbox, KEYS[5] deadlines,
-- KEYS[6] relay lease, KEYS[7] the queue's early joiners, KEYS[8] its places (see
-- purchase.lua, queue.lua and src/store/keys.rs)
-- ARGV[1] 'seal' | 'drop' | 'unseal'
-- 'seal':   ARGV[2] ms the sale stays after it ended and after its last change
--           ARGV[3] ms an Idempotency-Key lives: the last purchase's key has expired first,
--                   so a retry of a purchase replays its order until then
-- 'drop', 'unseal': ARGV[2] the revision the sale was sealed at (a copy another primary
--           wrote is dropped whatever it holds: 'drop' is only asked for archived sales)
--
-- Reply to 'seal': { 'sealed', rev, stock, sold, orders, paid, expired, cancelled }, or
--   { 'sale_missing' } (not held, or a copy another primary wrote: a request rebuilds it
--   first), { 'live' } (it has not ended, or has not settled: an order awaits payment, an
--   event waits in the outbox), { 'waiting', ms } (ended and settled, not long enough ago)
-- Reply to 'drop': { 'dropped' }, { 'gone' } (nothing was left: dropped before) or { 'kept' }
--   (a PUT reopened it); to 'unseal': { 'unsealed' } or { 'kept' }

local sale = KEYS[1]
local action = ARGV[1]

-- A copy another primary (or an earlier layout) wrote is rebuilt first (prelude.lua).
local primary = this_primary()

if action ~= 'seal' then
  local held = fields_of(sale, 'sealed', 'primary')
  if action == 'unseal' then
    if held.sealed ~= ARGV[2] then return { 'kept' } end
    redis.call('HDEL', sale, 'sealed')
    return { 'unsealed' }
  end
  -- A copy another primary wrote, or keys left without the sale's hash, are only ever
  -- dropped for a sale whose definition says archived (the caller's rule): nothing would
  -- decide on them again.
  if held.sealed ~= ARGV[2] and held.primary == primary then return { 'kept' } end
  -- 'gone' when another replica's drop came first: each archive is counted once.
  if redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
                 KEYS[8]) == 0 then
    return { 'gone' }
  end
  return { 'dropped' }
end
local f = fields_of(sale, 'stock', 'sold', 'ends_at', 'ended', 'changed', 'rev', 'primary',
                    'sealed', 'n_paid', 'n_expired', 'n_cancelled')
local stock, sold = tonumber(f.stock), tonumber(f.sold)
if not stock or f.primary ~= primary then return { 'sale_missing' } end

local function sealed(rev)
  return { 'sealed', rev, stock, sold, redis.call('HLEN', KEYS[2]), tonumber(f.n_paid or 0),
           tonumber(f.n_expired or 0), tonumber(f.n_cancelled or 0) }
end
if f.sealed then return sealed(f.sealed) end

local now = now_ms()
local ends_at, ended, changed = tonumber(f.ends_at), tonumber(f.ended), tonumber(f.changed) or 0

-- Ended: by its window, by an operator, or sold out. Settled: nothing awaits payment, and
-- JetStream holds every event.
local ended_at
if ended then
  ended_at = ended
elseif ends_at and now >= ends_at then
  ended_at = ends_at
elseif sold >= stock then
  ended_at = changed
end
if not ended_at or redis.call('ZCARD', KEYS[5]) > 0 or redis.call('XLEN', KEYS[4]) > 0 then
  return { 'live' }
end
local due = math.max(ended_at + tonumber(ARGV[2]), changed + tonumber(ARGV[2]),
                     changed + tonumber(ARGV[3]))
if now < due then return { 'waiting', due - now } end

local rev = f.rev or '0'
redis.call('HSET', sale, 'sealed', rev)
return sealed(rev)
