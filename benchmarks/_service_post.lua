-- wrk script of benchmarks/service.py: POST one JSON body, count the answers.
--
--   wrk -t1 -c50 -d5s -s _service_post.lua URL -- BODY_FILE [PATH [TOKEN]]
--
-- Every request POSTs the contents of BODY_FILE to PATH (default /jobs);
-- the request is built once per thread. At the end it prints one line,
-- "WRKJSON {...}": requests, answers by status, socket errors and latency
-- percentiles in microseconds, summed over wrk's threads.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = { ["Content-Type"] = "application/json" }
  if args[3] then
    headers["Authorization"] = "Bearer " .. args[3]
  end
  prepared = wrk.format("POST", args[2] or "/jobs", headers, body)
  codes = {}
end

function request()
  return prepared
end

function response(status, headers, body)
  local key = tostring(status)
  codes[key] = (codes[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("codes")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "statuses": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max
  ))
end
