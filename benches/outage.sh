#!/usr/bin/env bash
# Outage benchmark: a fixed request rate while every broker of a librdkafka mock cluster (in
# its own process) is down for a while; see benches/tools/outage.rs for what it prints.
#   benches/outage.sh                   2,000 req/s and half the measured maximum, 6 s outage
# Knobs: OUTAGE_RATES (default "2000 max/2"), OUTAGE_SECONDS (6), OUTAGE_CONNECTIONS (64),
# BENCH_BRIDGE (a comm100-bridge binary to measure instead of this tree's).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin comm100-bridge --example bench_broker --example bench_outage
bridge=${BENCH_BRIDGE:-target/release/comm100-bridge}
# shellcheck disable=SC2086 # the rates are words
target/release/examples/bench_outage "$bridge" target/release/examples/bench_broker \
  ${OUTAGE_RATES:-2000 max/2} --outage "${OUTAGE_SECONDS:-6}" \
  --connections "${OUTAGE_CONNECTIONS:-64}"
