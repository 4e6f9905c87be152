-- wrk script: POSTs the bundled Comm100 samples in rotation through the seven event types.
-- FIXTURES names the directory of the samples. done() prints one RESULT line that
-- bench/run.sh parses.
local names = {
  "chat_requested", "chat_started", "chat_transferred", "chat_ended",
  "chat_wrapped_up", "offline_message_submitted", "agent_status_changed_online",
}
local bodies = {}
local dir = os.getenv("FIXTURES") or "tests/fixtures"
for _, name in ipairs(names) do
  local f = assert(io.open(dir .. "/" .. name .. ".json", "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
local headers = { ["Content-Type"] = "application/json" }
local i = 0

function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end

function done(summary, latency, _)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
