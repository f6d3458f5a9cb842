-- GET /healthz: the HTTP ceiling, no Redis.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

wrk.path = "/healthz"

function classify(status, body)
  if status == 200 then return "ok" end
  return "status_" .. status
end
