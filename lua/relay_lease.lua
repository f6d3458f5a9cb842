-- relay_lease.lua: take or renew the lease on one sale's outbox.
--
-- Only the lease holder relays a sale, so its events reach JetStream in outbox order. A
-- holder that dies stops renewing; after the TTL another replica takes over (and claims the
-- entries the dead one had read but not acknowledged).
--
-- KEYS[1] lease STRING (holder's consumer name)   ARGV[1] consumer name   ARGV[2] TTL ms
-- Reply: 1 when the caller holds the lease now, 0 when another replica does.

local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
