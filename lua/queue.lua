-- queue.lua: a buyer joins a sale's waiting room: one place in line per buyer, in one step.
--
-- Before the sale's start, joins go into a set scored by a random number the replica drew
-- (KEYS[2]): at the start that set is frozen (no script adds to it once Redis's clock passed
-- starts_at), and a buyer's place is its rank in it. So the line of everyone who came early
-- is shuffled with no draw job: camping gives no advantage. After the start, places follow
-- arrival, after the early ones: the sale's counter `q_next` (the last place handed out).
--
-- No place is ever handed out twice, not even after Redis loses the sale: places are handed
-- out only up to `q_ceiling`, and the caller raises it only after JetStream recorded the new
-- ceiling (src/recovery/places.rs). A counter Redis lost starts again above the ceiling
-- JetStream last recorded (ARGV[3]): the places in between go unused, none repeats.
--
-- KEYS[1] sale   HASH (see purchase.lua): queue (src/domain/queue.rs), q_next, q_ceiling
-- KEYS[2] early  ZSET user_id -> a random score: who joined before the start
-- KEYS[3] places HASH user_id -> place: who joined after it
-- ARGV[1] user_id
-- ARGV[2] a random integer below 2^52 (the buyer's score, if it joins early)
-- ARGV[3] the ceiling JetStream recorded before this reservation ('' = no reservation)
-- ARGV[4] the new ceiling JetStream just recorded ('' = no reservation)
--
-- Reply: { outcome, now_ms, queue field, ... } where outcome is
--   'placed', place, 1 when this call gave it (0: the buyer's place already)
--   'waiting'         joined before the start: the place is drawn at the start
--   'reserve', next   no place left below the ceiling: the caller reserves more and calls again
--   'queue_not_open' | 'sale_not_open' | 'sold_out' | 'no_queue' | 'sale_missing'

local sale, early, places = KEYS[1], KEYS[2], KEYS[3]
local user = ARGV[1]

local now = now_ms()
local f = fields_of(sale, 'stock', 'sold', 'ends_at', 'ended', 'primary', 'queue', 'q_next',
                    'q_ceiling')
-- A copy another primary wrote counts as missing (prelude.lua: this_primary).
if not f.stock or f.primary ~= this_primary() then return { 'sale_missing' } end
local queue = queue_of(f.queue)
if not queue then return { 'no_queue' } end
local reply = function(outcome, ...) return { outcome, now, f.queue, ... } end

local ends_at = tonumber(f.ends_at)
if f.ended or (ends_at and now >= ends_at) then return reply('sale_not_open') end
if tonumber(f.sold) >= tonumber(f.stock) then return reply('sold_out') end
local starts = queue.segments[1][1]
if now < starts - queue.opens_before then return reply('queue_not_open') end

if now < starts then
  redis.call('ZADD', early, 'NX', ARGV[2], user)
  return reply('waiting')
end

-- After the start: an early joiner's place is its rank, drawn by the scores.
local rank = redis.call('ZRANK', early, user)
if rank then return reply('placed', rank + 1, 0) end
local place = tonumber(redis.call('HGET', places, user))
if place then return reply('placed', place, 0) end

local next, ceiling = tonumber(f.q_next), tonumber(f.q_ceiling) or 0
if ARGV[4] ~= '' then
  -- A reservation JetStream holds. A counter this copy lacks (the first join after the
  -- start, or a sale Redis lost) starts above the early joiners and above what JetStream
  -- recorded before: whatever a lost copy handed out lies below that.
  if not next then
    next = math.max(redis.call('ZCARD', early), tonumber(ARGV[3]))
  end
  ceiling = math.max(ceiling, tonumber(ARGV[4]))
  redis.call('HSET', sale, 'q_next', next, 'q_ceiling', ceiling)
end
if not next or next >= ceiling then return reply('reserve', next or redis.call('ZCARD', early)) end
place = next + 1
redis.call('HSET', sale, 'q_next', place)
redis.call('HSET', places, user, place)
return reply('placed', place, 1)
