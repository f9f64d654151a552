#!/usr/bin/env bash
# Restart with N stored bindings (issue 16; default 1 000 000): fills a location store with
# examples/location_fill.rs, starts the release binary on it, and reports the time until
# /healthz answers (sipward loads every binding before it listens), the sipward_bindings
# gauge and the RSS. Loopback only.
#
#   bash benches/restart-1m.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin sipward --example location_fill
dir="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$CARGO_TARGET_DIR/release/examples/location_fill" "$dir/location.db" "$n"
cat > "$dir/sipward.toml" <<TOML
[log]
level = "info"
[sip]
udp = ["127.0.0.1:25060"]
tcp = []
[registrar]
persistence = "sqlite"
store_path = "location.db"
[http]
listen = "127.0.0.1:28080"
[[domains]]
name = "bench.test"
TOML
start=$(date +%s.%N)
"$CARGO_TARGET_DIR/release/sipward" serve --config "$dir/sipward.toml" 2> "$dir/stderr.log" &
pid=$!
until curl -sf http://127.0.0.1:28080/healthz > /dev/null; do sleep 0.01; done
ready=$(date +%s.%N)
bindings=$(curl -s http://127.0.0.1:28080/metrics | awk '$1 == "sipward_bindings" {print $2}')
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
echo "restart with $n stored bindings: ready after $(echo "$ready - $start" | bc) s, sipward_bindings $bindings, RSS $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB)"
grep -o 'location store loaded.*' "$dir/stderr.log" || true
