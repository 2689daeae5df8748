-- wrk script for tests/test_rolling_restart.py: each thread counts its answers, 2xx or not; done() adds them up
-- over the threads and prints one line, "WRK {json}", with wrk's own socket errors beside them.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  other = 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok_all, other_all = 0, 0
  for _, thread in ipairs(threads) do
    ok_all = ok_all + thread:get("ok")
    other_all = other_all + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "ok": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"seconds": %.2f, "p99_ms": %.1f, "max_ms": %.1f}\n',
    summary.requests, ok_all, other_all, e.connect, e.read, e.write, e.timeout, summary.duration / 1e6,
    latency:percentile(99) / 1000, latency.max / 1000))
end
