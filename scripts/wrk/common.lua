-- Shared by the load-test scripts: per-thread outcome counts, summed and printed as one
-- machine-readable RESULT line by done(). Each script defines classify(status, body).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

counts = {}

function response(status, headers, body)
  local outcome = classify(status, body)
  counts[outcome] = (counts[outcome] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for outcome, n in pairs(thread:get("counts")) do
      total[outcome] = (total[outcome] or 0) + n
    end
  end
  local parts = {}
  for outcome, n in pairs(total) do
    table.insert(parts, outcome .. "=" .. n)
  end
  table.sort(parts)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f requests=%d socket_errors=%d %s\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests, errors, table.concat(parts, " ")))
end
