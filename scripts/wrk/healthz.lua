-- GET /healthz: the HTTP ceiling, no Redis. The request is built per call, as in the other
-- scripts, so wrk spends the same effort per request on every path it is compared with.
package.path = package.path .. ";" .. (os.getenv("WRK_DIR") or "scripts/wrk") .. "/?.lua"
require "common"

function request()
  return wrk.format("GET", "/healthz")
end

function classify(status, body)
  if status == 200 then return "ok" end
  return "status_" .. status
end
