-- wrk script for scripts/bench/gc.sh: cycles through the request paths in
-- the file WRK_PATHS (one a line), each thread from its own offset, with an
-- optional pause of WRK_THINK_MS before each request (so the load offered
-- stays below what the server can do; wrk times a request from its first
-- byte written, so the pause is not in the latency). WRK_ACCEPT sets an
-- Accept header. done() prints one line the runner parses.
local paths = {}
local idx = 1
local think = tonumber(os.getenv("WRK_THINK_MS") or "0") or 0
local accept = os.getenv("WRK_ACCEPT")
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("WRK_PATHS")) do
    if line ~= "" then table.insert(paths, line) end
  end
  if #paths == 0 then error("no paths in " .. tostring(os.getenv("WRK_PATHS"))) end
  idx = ((tid or 0) * 7919) % #paths + 1
  if accept and accept ~= "" then wrk.headers["Accept"] = accept end
end

if think > 0 then
  function delay()
    return think
  end
end

function request()
  local p = paths[idx]
  idx = idx % #paths + 1
  return wrk.format("GET", p)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.bytes,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.status, e.connect, e.read, e.write, e.timeout))
end
