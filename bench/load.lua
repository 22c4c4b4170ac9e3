-- Counts non-2xx responses per wrk thread and prints the total in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  responses = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad, total = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    total = total + thread:get("responses")
  end
  io.write(string.format("LUA non2xx=%d responses=%d errors=%d p50_us=%d p99_us=%d max_us=%d\n",
    bad, total, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
