#!/usr/bin/env bash
# Scrapes a running bridge with a real Prometheus server on loopback:
#   deploy/prometheus/smoke-test.sh path/to/comm100-bridge
# Starts `comm100-bridge dev` on a free port, posts the bundled samples and one
# unauthorized request, checks the scrape with `promtool check metrics`, lets
# Prometheus scrape it, and prints one query per metric. Fails if any is missing.
set -euo pipefail
bin=${1:?usage: smoke-test.sh path/to/comm100-bridge}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" dev --listen 127.0.0.1:0 >"$work/dev.out" 2>"$work/dev.err" &
pids+=($!)
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's|.*webhook URL: *http://\([0-9.:]*\)/.*|\1|p' "$work/dev.out")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "the bridge did not start"; cat "$work/dev.err"; exit 1; }
samples=$(sed -n 's|^ *samples: *||p' "$work/dev.out")
echo "bridge on $addr"

for round in 1 2 3; do
  for f in "$samples"/*.json; do
    curl -sS -o /dev/null -w "%{http_code} $(basename "$f") round $round\n" \
      "http://$addr/webhooks/comm100" --data-binary "@$f"
  done
done
curl -sS -o /dev/null -H 'Authorization: Bearer wrong' "http://$addr/webhooks/comm100" -d '{}' || true
curl -sS -o /dev/null "http://$addr/webhooks/comm100" -d 'not json' || true

curl -sS "http://$addr/metrics" >"$work/scrape.txt"
echo "== promtool check metrics"
promtool check metrics <"$work/scrape.txt"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s|bridge:9464|$addr|" -e 's|scrape_interval: 15s|scrape_interval: 1s|' \
  "$here/prometheus.yml" >"$work/prometheus.yml"
cp "$here/alerts.yml" "$work/alerts.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$port/api/v1"
for _ in $(seq 120); do
  if curl -sf "$api/targets" 2>/dev/null | grep -q '"health":"up"'; then break; fi
  sleep 0.5
done
curl -sf "$api/targets" | grep -q '"health":"up"' || { echo "Prometheus never scraped the bridge"; tail "$work/prometheus.log"; exit 1; }
sleep 2

echo "== what Prometheus scraped"
missing=0
while read -r query; do
  [ -n "$query" ] || continue
  result=$(curl -sfG "$api/query" --data-urlencode "query=$query" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(len(r), " ".join(sorted({x["value"][1] for x in r})[:6]))')
  printf '%-95s %s\n' "$query" "$result"
  case "$result" in 0*) missing=$((missing + 1)) ;; esac
done <<'QUERIES'
comm100_bridge_build_info
sum by (route, status) (comm100_bridge_http_requests_total)
comm100_bridge_http_request_duration_seconds_count{route="webhook"}
sum by (type) (comm100_bridge_events_received_total)
sum by (type) (comm100_bridge_events_published_total)
comm100_bridge_events_failed_total
comm100_bridge_events_spooled_total
comm100_bridge_spool_events
comm100_bridge_spool_bytes
sum by (type) (comm100_bridge_kafka_delivery_duration_seconds_count)
histogram_quantile(0.99, sum by (le) (comm100_bridge_kafka_delivery_duration_seconds_bucket))
comm100_bridge_spool_replay_retries_total
sum by (reason) (comm100_bridge_dlq_total)
sum by (reason) (comm100_bridge_dlq_dropped_total)
sum by (reason) (comm100_bridge_auth_failures_total)
comm100_bridge_inflight_requests
comm100_bridge_kafka_producer_queue_messages
comm100_bridge_kafka_brokers_up
process_resident_memory_bytes
process_cpu_seconds_total
ALERTS
QUERIES
# ALERTS is empty when nothing fires, as it should be here.
[ "$missing" -le 1 ] || { echo "$missing queries returned nothing"; exit 1; }
echo "smoke test passed"
