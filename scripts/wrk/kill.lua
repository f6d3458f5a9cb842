-- GET /kill, the seed-compatible path: counts the two texts.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

wrk.path = "/kill"

function classify(status, body)
  if status == 200 and body == "提交订单成功" then return "created" end
  if status == 200 and body == "商品已售完" then return "sold_out" end
  return "status_" .. status
end
