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
