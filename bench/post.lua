-- wrk script: POST $BENCH_BODY to $BENCH_PATH (Bearer $BENCH_AUTH when set) and print one
-- line "BENCH_JSON {...}" with the totals and latency percentiles (microseconds).
-- With $BENCH_EXPECT set, every answer is checked: it counts as "matched" only with status
-- $BENCH_EXPECT_STATUS and the text $BENCH_EXPECT in its body (wrk parses bodies then).

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/jobs"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

local expect = os.getenv("BENCH_EXPECT")
local expect_status = tonumber(os.getenv("BENCH_EXPECT_STATUS") or "200")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

matched = 0
unmatched = 0

if expect ~= nil and expect ~= "" then
  function response(status, headers, body)
    if status == expect_status and string.find(body, expect, 1, true) then
      matched = matched + 1
    else
      unmatched = unmatched + 1
    end
  end
end

function done(summary, latency, requests)
  local m, u = 0, 0
  for _, thread in ipairs(threads) do
    m = m + (thread:get("matched") or 0)
    u = u + (thread:get("unmatched") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"matched":%d,"unmatched":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, m, u))
end
