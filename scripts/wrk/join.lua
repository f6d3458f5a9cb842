-- POST /v1/sales/<sku>/queue, a new buyer each request. SKU comes from the environment.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

local path = "/v1/sales/" .. os.getenv("SKU") .. "/queue"
local headers = { ["Content-Type"] = "application/json" }
local prefix = os.getenv("PREFIX") or "j"
local n = 0

function request()
  n = n + 1
  return wrk.format("POST", path, headers,
    '{"user_id":"' .. prefix .. thread_id .. "-" .. n .. '"}')
end

function classify(status, body)
  if status == 201 then return "placed" end
  return "status_" .. status
end
