-- prelude.lua: what every script of lua/ shares. It is not a script of its own:
-- src/store/mod.rs puts it in front of each one (Redis scripts cannot include one another),
-- after one line it writes itself: `local LAYOUT = '/2'`, the layout of a sale's keys
-- (src/store/mod.rs: LAYOUT).

-- Redis's clock in ms, not the replica's: every replica then agrees on the sale window and
-- on every payment deadline.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- What a sale's `primary` field holds when this primary, in this layout, wrote its copy: the
-- replication id of the primary running the script, then LAYOUT. A sale records it when it is
-- written (put_sale.lua, restore.lua); any other value means the copy came from elsewhere: a
-- replica promoted after a failover (asynchronous replication may have missed acknowledged
-- writes), a slot moved to another master, a restart from a dump, or an earlier layout. Such
-- a copy may be behind what was sold, so it counts as missing: the caller catches the sale up
-- from JetStream first, and nothing is decided on it.
local function this_primary()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') .. LAYOUT
end

-- The named fields of a hash, read in one HMGET: `fields_of(key, 'stock', 'sold').stock`.
local function fields_of(key, ...)
  local names = { ... }
  local values = redis.call('HMGET', key, ...)
  local named = {}
  for i, name in ipairs(names) do named[name] = values[i] end
  return named
end

-- An order's field in its sale's orders hash (see purchase.lua's KEYS[2]): the sequence
-- number alone when its id starts with the sale's current prefix `oid`, else the id without
-- the sku digest and dash every id of the sale starts with (an order from before the sale's
-- last rebuild).
local function order_field(oid, id)
  if string.sub(id, 1, #oid + 1) == oid .. '-' then return string.sub(id, #oid + 2) end
  return string.sub(id, 18)
end

-- A sale's waiting room, from the sale hash's `queue` field (src/domain/queue.rs:
-- Queue::encode): when its line opens before the sale (ms), how long an admission lasts (ms),
-- and its admission schedule, segments { since ms, places a second }. nil without a queue.
local function queue_of(text)
  if not text then return nil end
  local opens_before, admission, list = string.match(text, '^%d+;(%d+);(%d+);(.*)$')
  local segments = {}
  for since, rate in string.gmatch(list, '(%-?%d+):(%d+)') do
    segments[#segments + 1] = { tonumber(since), tonumber(rate) }
  end
  return { opens_before = tonumber(opens_before) * 1000, admission = tonumber(admission) * 1000,
           segments = segments }
end

-- The first instant (ms) at which `place` is admitted, nil while the schedule, paused before
-- it, never reaches it: Schedule::admit_time of src/domain/queue.rs, which has its reasons.
local function admit_time(segments, place)
  local need = place * 1000
  for i = 1, #segments do
    local since, rate = segments[i][1], segments[i][2]
    local next = segments[i + 1]
    local capacity = next and rate * math.max(next[1] - since, 0)
    if capacity and need > capacity then
      need = need - capacity
    elseif rate == 0 then
      return nil
    else
      return since + math.ceil(need / rate)
    end
  end
  return nil
end
