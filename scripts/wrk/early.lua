-- POST /v1/sales/<sku>/orders with a queue token whose place is not admitted yet: each is
-- answered 409 not_admitted. SKU, USER and TOKEN come from the environment.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

local path = "/v1/sales/" .. os.getenv("SKU") .. "/orders"
local headers = { ["Content-Type"] = "application/json", ["Queue-Token"] = os.getenv("TOKEN") }
local body = '{"user_id":"' .. os.getenv("USER_ID") .. '"}'

function request()
  return wrk.format("POST", path, headers, body)
end

function classify(status, body)
  if status == 409 and body:find("not_admitted", 1, true) then return "not_admitted" end
  return "status_" .. status
end
