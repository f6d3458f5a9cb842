-- GET /v1/orders/<OID>-<n>, n a random order of the sale (1..ORDERS): reads of one sale's
-- orders, live or archived. OID (the sale's order-id prefix), ORDERS and TOKEN (a bearer
-- token) come from the environment.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

local oid = os.getenv("OID")
local orders = tonumber(os.getenv("ORDERS"))
local headers = { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") }

function request()
  return wrk.format("GET", "/v1/orders/" .. oid .. "-" .. math.random(orders), headers)
end

function classify(status, body)
  if status == 200 then return "read" end
  return "status_" .. status
end
