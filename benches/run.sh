#!/usr/bin/env bash
# End-to-end benchmark of comm100-bridge against a Kafka-protocol broker on loopback.
#   benches/run.sh                      broker: Apache Kafka, 3 brokers of tests/kafka/cluster,
#                                     topics with replication 3 and min.insync.replicas 2
#   BENCH_BROKER=tansu benches/run.sh   broker: tansu (installed into the cache if missing)
#   BENCH_BROKER=mock benches/run.sh    broker: a librdkafka mock cluster in its own process
# Knobs: BENCH_DURATION (s, default 15), BENCH_CONNECTIONS (connection counts, each
# measured in turn; default "64 256"), BENCH_THREADS (2),
# BENCH_PIN=1 (servers on CPU 0, load generator on CPU 1), BENCH_CACHE (tool installs),
# BENCH_OUT (results file, default docs/benchmarks.md), BENCH_PROPERTIES (librdkafka
# properties for the bridge, e.g. "linger.ms=5 compression.type=none"; default: the
# bridge's own defaults), BENCH_PARTITIONS (partitions per topic, default 3), BENCH_WARMUP
# (s of load on a new Kafka cluster before the first measurement, default 45),
# BENCH_REPEAT (max-rate runs of the bridge per connection count, default 3: CPU and
# context switches per request are their medians), BENCH_BRIDGE (a comm100-bridge binary
# to measure instead of the one built from this tree, e.g. an earlier commit's for a
# before/after comparison; allocations and instructions are always this tree's).
# It measures the bridge and, as the ceiling, a bare hyper server that reads the body and
# answers 200, under the same wrk load (the seven Comm100 samples in rotation); then the
# bridge at a fixed rate of half its maximum (oha, installed into the cache if missing),
# with the share of its requests and of its Kafka deliveries over 5 ms from /metrics.
# It reports the bridge's and the broker's CPU time per request and the bridge's context
# switches per request (from /proc, over the max-rate runs), and the bridge's heap
# allocations per request (benches/tools/allocations.rs, against a mock cluster), and
# writes a table with the machine and versions into the broker's section of BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
broker=${BENCH_BROKER:-kafka}
duration=${BENCH_DURATION:-15}
connections=${BENCH_CONNECTIONS:-64 256}
threads=${BENCH_THREADS:-2}
cache=${BENCH_CACHE:-$HOME/.cache/comm100-bridge}
out=${BENCH_OUT:-docs/benchmarks.md}
partitions=${BENCH_PARTITIONS:-3}
repeat=${BENCH_REPEAT:-3}
export FIXTURES="$PWD/tests/fixtures"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$work/kafka/cluster.env" ]; then tests/kafka/cluster stop --dir "$work/kafka" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
servers=(); loadgen=()
if [ "${BENCH_PIN:-0}" = 1 ]; then servers=(taskset -c 0); loadgen=(taskset -c 1); fi

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
oha=$(command -v oha || true)
[ -n "$oha" ] || oha="$cache/bin/oha"
if [ ! -x "$oha" ]; then
  echo "installing oha into $cache (about 5 minutes, once)"
  cargo install oha --locked --root "$cache"
fi
cargo build --release --locked --bin comm100-bridge --example bench_ceiling --example bench_broker \
  --example bench_allocations
bin=target/release
bridge=${BENCH_BRIDGE:-$bin/comm100-bridge}

# The broker. Each measured run gets a fresh broker and bridge: tansu keeps every record
# in memory and slows down as it grows.
tansu=""
if [ "$broker" = kafka ]; then
  broker_version="Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/kafka/pom.xml) (3 KRaft nodes of tests/kafka/cluster, $(java -version 2>&1 | head -1 | tr -d '"'), replication 3, min.insync.replicas 2)"
elif [ "$broker" = mock ]; then
  broker_version="librdkafka mock cluster (rdkafka-sys $(cargo metadata --format-version 1 | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="rdkafka-sys"))'))"
else
  tansu=$(command -v tansu || true)
  [ -n "$tansu" ] || tansu="$cache/bin/tansu"
  if [ ! -x "$tansu" ]; then
    echo "installing tansu into $cache (about 12 minutes, once)"
    cargo install tansu --locked --features dynostore --root "$cache"
  fi
  broker_version="tansu $("$tansu" --version 2>/dev/null | awk '{print $NF}')"
fi

# start_mock NAME [PREFIX...]: a librdkafka mock cluster in its own process, run under
# PREFIX (such as taskset); sets mock_pid and mock_bootstrap.
start_mock() {
  local out="$work/$1.out"
  shift
  "$@" "$bin/examples/bench_broker" mock "$partitions" >"$out" 2>&1 &
  mock_pid=$!
  for _ in $(seq 100); do grep -q '^bootstrap ' "$out" && break; sleep 0.1; done
  mock_bootstrap=$(sed -n 's/^bootstrap //p' "$out")
}

# start_broker: a fresh broker with every topic; sets bootstrap and broker_pids. Apache
# Kafka is started once and kept: unlike tansu it does not slow down as it fills.
broker_pids=()
start_broker() {
  if [ "$broker" = kafka ]; then
    if [ ! -f "$work/kafka/cluster.env" ]; then
      tests/kafka/cluster start --brokers 3 --dir "$work/kafka" >"$work/kafka.out"
      tests/kafka/cluster topics --dir "$work/kafka" --partitions "$partitions" --replication 3 --min-insync 2
    fi
    bootstrap=$(sed -n 's/^BOOTSTRAP=//p' "$work/kafka.out")
    broker_pids=("$(cat "$work/kafka/node-1/pid")" "$(cat "$work/kafka/node-2/pid")" "$(cat "$work/kafka/node-3/pid")")
    if [ "${BENCH_PIN:-0}" = 1 ]; then
      for pid in "${broker_pids[@]}"; do taskset -a -pc 0 "$pid" >/dev/null; done
    fi
    return
  fi
  if [ "$broker" = mock ]; then
    start_mock broker "${servers[@]}"
    broker_pid=$mock_pid
    bootstrap=$mock_bootstrap
  else
    local kport
    kport=$(free_port)
    bootstrap="127.0.0.1:$kport"
    "${servers[@]}" "$tansu" broker --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap" \
      --storage-engine memory://tansu/ >"$work/broker.out" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
    "$bin/examples/bench_broker" create-topics "$bootstrap" "$partitions" >/dev/null
  fi
  pids+=("$broker_pid")
  broker_pids=("$broker_pid")
}

# The bridge's configuration, less the broker address.
bport=$(free_port)
cport=$(free_port)
cat >"$work/bridge.toml" <<TOML
[http]
listen = "127.0.0.1:$bport"
[admin]
# No admin listener: /healthz and /metrics on the benchmarked port.
listen = ""
[auth]
tokens = ["bench"]
[spool]
dir = "$work/spool"
[log]
level = "warn"
TOML
if [ -n "${BENCH_PROPERTIES:-}" ]; then
  echo '[kafka.properties]' >>"$work/bridge.toml"
  for kv in $BENCH_PROPERTIES; do printf '"%s" = "%s"\n' "${kv%%=*}" "${kv#*=}" >>"$work/bridge.toml"; done
fi
# The producer properties in effect: the run's own, else the bridge's defaults.
property() { awk -F'"' -v k="$1" '$2 == k {print $4; exit}' "$work/bridge.toml" config/default.toml; }
tuning="linger.ms = $(property linger.ms), compression.type = $(property compression.type)"
[ -n "${BENCH_PROPERTIES:-}" ] && tuning="$tuning (set for this run: \`$BENCH_PROPERTIES\`)"

# start_bridge: a fresh broker and bridge, the producer's connections warmed up; sets
# bridge_pid.
start_bridge() {
  start_broker
  rm -rf "$work/spool"
  COMM100_BRIDGE__KAFKA__BROKERS="$bootstrap" "${servers[@]}" "$bridge" serve \
    --config "$work/bridge.toml" 2>>"$work/bridge.err" &
  bridge_pid=$!
  pids+=("$bridge_pid")
  wait_http "http://127.0.0.1:$bport/healthz"
  wrk -t1 -c4 -d2s -s benches/post.lua "http://127.0.0.1:$bport/webhooks/comm100?token=bench" >/dev/null
  # A fresh JVM runs interpreted and compiles as it goes: the first 15 s against a new
  # Kafka cluster measured at a third of its later rate. Warm it once, under load.
  if [ "$broker" = kafka ] && [ ! -f "$work/kafka/warm" ]; then
    wrk -t2 -c64 -d"${BENCH_WARMUP:-45}s" -s benches/post.lua "http://127.0.0.1:$bport/webhooks/comm100?token=bench" >/dev/null
    touch "$work/kafka/warm"
  fi
}

# stop_bridge: stops the bridge and its broker, keeping the bridge's peak RSS in peak_rss.
peak_rss=0
stop_bridge() {
  peak_rss=$(awk -v a="$peak_rss" -v b="$(peak_rss_mib "$bridge_pid")" 'BEGIN {print (b > a ? b : a)}')
  kill "$bridge_pid"
  wait "$bridge_pid" 2>/dev/null || true
  if [ "$broker" != kafka ]; then
    kill "${broker_pids[@]}"
    wait "${broker_pids[@]}" 2>/dev/null || true
  fi
}

"${servers[@]}" "$bin/examples/bench_ceiling" "127.0.0.1:$cport" >/dev/null &
pids+=($!)
wait_http "http://127.0.0.1:$cport/"

# cpu_seconds PID...: user + system CPU of the processes, summed.
cpu_seconds() {
  local pid total=0
  for pid in "$@"; do
    total=$(awk -v hz="$(getconf CLK_TCK)" -v t="$total" '{printf "%.2f", t + ($14 + $15) / hz}' "/proc/$pid/stat")
  done
  echo "$total"
}
# context_switches PID: voluntary and involuntary context switches of all its threads.
context_switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2} END {print n + 0}'
}
# median N...: the middle value (the lower middle of an even count).
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# run NAME URL CONNECTIONS: prints "rps p50_ms p99_ms p999_ms non2xx errors"
run() {
  local name=$1 url=$2 conns=$3
  "${loadgen[@]}" wrk -t"$threads" -c"$conns" -d"${duration}s" -s benches/post.lua "$url" >"$work/$name.wrk"
  python3 - "$work/$name.wrk" <<'PY'
import re, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("RESULT"))
f = dict(kv.split("=") for kv in line.split()[1:])
f = {k: int(v) for k, v in f.items()}
rps = f["requests"] / (f["duration_us"] / 1e6)
print(f'{rps:.0f} {f["p50_us"]/1000:.2f} {f["p99_us"]/1000:.2f} {f["p999_us"]/1000:.2f} {f["non2xx"]} {f["errors"]}')
PY
}

# The fixed-rate run: oha sends at exactly the given rate whatever the latency, and
# --latency-correction measures from each request's scheduled time (no coordinated
# omission). Its bodies are the same seven samples, one compact JSON per line.
python3 - "$FIXTURES" >"$work/bodies.ndjson" <<'PY'
import json, sys
for name in ["chat_requested", "chat_started", "chat_transferred", "chat_ended",
             "chat_wrapped_up", "offline_message_submitted", "agent_status_changed_online"]:
    print(json.dumps(json.load(open(f"{sys.argv[1]}/{name}.json")), ensure_ascii=False, separators=(",", ":")))
PY
# fixed_rate CONNECTIONS RATE: prints "rps p50_ms p99_ms p999_ms non2xx errors"
fixed_rate() {
  "${loadgen[@]}" "$oha" -z "${duration}s" -w -c "$1" -q "$2" --latency-correction --no-tui \
    --output-format json -m POST -T application/json -Z "$work/bodies.ndjson" \
    "http://127.0.0.1:$bport/webhooks/comm100?token=bench" >"$work/half.json"
  python3 - "$work/half.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["latencyPercentiles"]
codes = {int(k): v for k, v in r["statusCodeDistribution"].items()}
non2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
errors = sum(r.get("errorDistribution", {}).values())
print(f'{r["summary"]["requestsPerSec"]:.0f} {p["p50"]*1000:.2f} {p["p99"]*1000:.2f} {p["p99.9"]*1000:.2f} {non2xx} {errors}')
PY
}

# over_5ms BEFORE AFTER: from two scrapes of the bridge's /metrics, the share of webhook
# requests and of Kafka deliveries between them that took over 5 ms, as "http% kafka%".
over_5ms() {
  python3 - "$1" "$2" <<'PY'
import re, sys
def read(path):
    totals = {}
    for line in open(path):
        m = re.match(r'comm100_bridge_(http_request|kafka_delivery)_duration_seconds_(bucket|count)\{([^}]*)\} (\S+)', line)
        if not m or (m[1] == "http_request" and 'route="webhook"' not in m[3]):
            continue
        if m[2] == "count" or 'le="0.005"' in m[3]:
            key = (m[1], m[2])
            totals[key] = totals.get(key, 0) + float(m[4])
    return totals
a, b = read(sys.argv[1]), read(sys.argv[2])
def over(name):
    n = b[(name, "count")] - a[(name, "count")]
    fast = b[(name, "bucket")] - a[(name, "bucket")]
    return 100 * (n - fast) / n if n else 0
print(f'{over("http_request"):.1f} {over("kafka_delivery"):.1f}')
PY
}

# Measure at each connection count.
rows=""
notes=""
for conns in $connections; do
  cpus=(); broker_cpus=(); switches=(); rates=()
  for _ in $(seq "$repeat"); do
    start_bridge
    cpu_before=$(cpu_seconds "$bridge_pid")
    broker_cpu_before=$(cpu_seconds "${broker_pids[@]}")
    switches_before=$(context_switches "$bridge_pid")
    read -r b_rps b_p50 b_p99 b_p999 b_non2xx b_err < <(run bridge "http://127.0.0.1:$bport/webhooks/comm100?token=bench" "$conns")
    cpu_after=$(cpu_seconds "$bridge_pid")
    broker_cpu_after=$(cpu_seconds "${broker_pids[@]}")
    switches_after=$(context_switches "$bridge_pid")
    requests=$((b_rps * duration))
    cpus+=("$(python3 -c "print(round(1e6 * ($cpu_after - $cpu_before) / $requests, 1))")")
    broker_cpus+=("$(python3 -c "print(round(1e6 * ($broker_cpu_after - $broker_cpu_before) / $requests, 1))")")
    switches+=("$(python3 -c "print(round(($switches_after - $switches_before) / $requests, 2))")")
    rates+=("$b_rps")
    stop_bridge
  done
  read -r c_rps c_p50 c_p99 c_p999 c_non2xx c_err < <(run ceiling "http://127.0.0.1:$cport/" "$conns")
  half=$(($(median "${rates[@]}") / 2))
  start_bridge
  curl -sf "http://127.0.0.1:$bport/metrics" >"$work/metrics.before"
  read -r h_rps h_p50 h_p99 h_p999 h_non2xx h_err < <(fixed_rate "$conns" "$half")
  curl -sf "http://127.0.0.1:$bport/metrics" >"$work/metrics.after"
  read -r h_http_slow h_kafka_slow < <(over_5ms "$work/metrics.before" "$work/metrics.after")
  stop_bridge
  per_request=$(median "${cpus[@]}")
  broker_per_request=$(median "${broker_cpus[@]}")
  switches_per_request=$(median "${switches[@]}")
  ratio=$(python3 -c "print(round(100 * $b_rps / $c_rps, 1))")
  rows+="| $conns | bridge, max rate | $b_rps | $b_p50 | $b_p99 | $b_p999 | $b_non2xx | $b_err |
| $conns | ceiling (bare hyper, read body, 200) | $c_rps | $c_p50 | $c_p99 | $c_p999 | $c_non2xx | $c_err |
| $conns | bridge at a fixed $half req/s (half its max, oha) | $h_rps | $h_p50 | $h_p99 | $h_p999 | $h_non2xx | $h_err |
"
  notes+="- $conns connections: bridge ÷ ceiling **$ratio %** (the last of $repeat max-rate runs: ${rates[*]} req/s); per request, medians of the $repeat runs: bridge CPU **$per_request µs** (${cpus[*]}), broker CPU $broker_per_request µs (${broker_cpus[*]}), bridge context switches **$switches_per_request** (${switches[*]}).
  At half load, by the bridge's own histograms: $h_http_slow % of webhook requests took over 5 ms, and $h_kafka_slow % of Kafka deliveries (produce to acknowledgement) did.
"
done
rss=$peak_rss

# Heap allocations per request: the bridge in-process under a counting allocator, against
# a mock cluster in its own process (the count hardly depends on the broker).
start_mock alloc-broker
pids+=("$mock_pid")
read -r _ allocations _ allocated_bytes _ _ < <("$bin/examples/bench_allocations" "$mock_bootstrap" 20000 16)
kill "$mock_pid"

# Parse + normalize + serialize cost per event in instructions (callgrind), which unlike
# wall-clock time repeats exactly on a shared machine.
instructions=""
if command -v valgrind >/dev/null; then
  cargo build --release --locked --example bench_instructions
  count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin/examples/bench_instructions" "$FIXTURES/$1.json" "$2" 2>&1 | awk '/refs:/ {gsub(",", "", $4); print $4}'; }
  for sample in chat_ended chat_transferred offline_message_submitted chat_started agent_status_changed_online; do
    per_event=$(( ($(count "$sample" 210) - $(count "$sample" 10)) / 200 ))
    instructions+="| $sample | $(stat -c %s "$FIXTURES/$sample.json") | $per_event |
"
  done
fi

layout="unpinned (servers, broker and wrk share both cores)"
[ "${BENCH_PIN:-0}" = 1 ] && layout="bridge, broker and ceiling on CPU 0; wrk on CPU 1"
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
section() {
  echo "<!-- results:$broker -->"
  echo "## Against $broker_title"
  echo
  echo "Produced by \`benches/run.sh\` (\`BENCH_BROKER=$broker\`) on $(date -u +%Y-%m-%d)."
  echo
  echo "| connections | run | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | socket errors |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
  printf '%s' "$rows"
  echo
  printf '%s' "$notes"
  echo "- Bridge peak RSS over all runs: **$rss MiB**."
  echo "- Heap allocations per request (\`benches/tools/allocations.rs\`, 20,000 requests, 16 at a time, mock cluster): **$allocations** ($allocated_bytes bytes)."
  if [ -n "$instructions" ]; then
    echo
    echo "Parse + normalize + serialize, instructions per event under callgrind"
    echo "(\`benches/tools/instructions.rs\`; valgrind hides SHA-NI, so the fingerprint's SHA-256"
    echo "runs in software there, about 55 instructions per body byte that native runs do not spend):"
    echo
    echo "| sample | bytes | instructions |"
    echo "|---|---:|---:|"
    printf '%s' "$instructions"
  fi
  echo
  echo "Machine: $(nproc) cores, $cpu_model, $(free -g | awk '/Mem:/ {print $2}') GiB. Layout: $layout."
  echo "Broker: $broker_version on loopback, topics with $partitions partitions. Bridge: $tuning."
  echo "Versions: $("$bridge" --version), $(rustc --version), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')."
  echo "Load: \`wrk -t$threads -c<connections> -d${duration}s -s benches/post.lua URL\`; the fixed-rate run:"
  echo "\`oha -z ${duration}s -w -c <connections> -q <rate> --latency-correction -m POST -Z bodies.ndjson URL\`"
  echo "($("$oha" --version | head -1); the same samples as compact one-line JSON)."
  echo "<!-- /results:$broker -->"
}
case $broker in
  kafka) broker_title="Apache Kafka (3 brokers, replication 3, acks=all)" ;;
  tansu) broker_title="tansu (one in-memory broker)" ;;
  mock) broker_title="the librdkafka mock cluster (its own process)" ;;
esac
section >"$work/section.md"
# The file keeps one section per broker: this run replaces its own, or is added before the
# hand-written analysis, which survives re-runs.
[ -f "$out" ] || printf '# Benchmarks\n\n<!-- analysis -->\n' >"$out"
python3 - "$out" "$work/section.md" "$broker" >"$out.tmp" <<'PY'
import sys
doc, section, broker = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
begin, end = f"<!-- results:{broker} -->", f"<!-- /results:{broker} -->"
if begin in doc and end in doc:
    doc = doc[:doc.index(begin)] + section.rstrip("\n") + doc[doc.index(end) + len(end):]
elif "<!-- analysis -->" in doc:
    at = doc.index("<!-- analysis -->")
    doc = doc[:at] + section + "\n" + doc[at:]
else:
    doc = doc.rstrip("\n") + "\n\n" + section
sys.stdout.write(doc)
PY

mv "$out.tmp" "$out"
cat "$out"
