-- POST /v1/sales/<sku>/orders, a new buyer each request. SKU comes from the environment.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

local path = "/v1/sales/" .. os.getenv("SKU") .. "/orders"
local headers = { ["Content-Type"] = "application/json" }
-- REPEAT (1): how many orders each buyer places, one after the other.
local repeat_orders = tonumber(os.getenv("REPEAT") or "1")
local n = 0

function request()
  n = n + 1
  local buyer = math.ceil(n / repeat_orders)
  return wrk.format("POST", path, headers,
    '{"user_id":"t' .. thread_id .. "-" .. buyer .. '","quantity":1}')
end

function classify(status, body)
  if status == 201 then return "created" end
  -- Accepted, its event not yet confirmed by JetStream (FLASHSALE_CONFIRM=jetstream).
  if status == 202 then return "pending" end
  if status == 409 and body:find("sold_out", 1, true) then return "sold_out" end
  return "status_" .. status
end
