#!/usr/bin/env bash
# Two sipward nodes (127.0.0.2 and 127.0.0.3) sharing one redis-server (issue 17): the
# aggregate registration rate, sipward CPU per registration of both nodes together, and Redis
# round trips and CPU per registration. Each node gets its own generator at RATE/s over half
# of the users (u100000.. at A, u105000.. at B), both at once.
#
#   bash benches/redis-two-nodes.sh [SIPWARD_BINARY] [RATE_PER_NODE] [SECONDS]
#
# Everything on loopback, bounded (2 x RATE x SECONDS registrations). Needs redis-server,
# redis-cli, curl and the load generator (cargo build --release --example loadgen). Prints the
# figures; copy them into benches/RESULTS.md with the CPU model and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/sipward}
rate=${2:-1000}
secs=${3:-10}
loadgen=${LOADGEN:-target/release/examples/loadgen}
dir=$(mktemp -d)
rport=$((20000 + RANDOM % 5000)); sport=$((rport + 1))
ha=$((rport + 2)); hb=$((rport + 3))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
pids+=($!)
until redis-cli -p "$rport" PING >/dev/null 2>&1; do sleep 0.05; done
node() { # ip http name
  "$loadgen" sipward-config --udp "$1:$sport" --http "127.0.0.1:$2" \
    | sed "s/^persistence = \"none\"/persistence = \"redis\"\n\n[redis]\nurls = [\"redis:\/\/127.0.0.1:$rport\"]\nnode = \"$3\"\n\n[registrar_end]/" \
    | sed '/^\[registrar_end\]$/d' >"$dir/$3.toml"
  "$bin" serve --config "$dir/$3.toml" 2>"$dir/$3.log" &
  pids+=($!)
  until curl -sf "http://127.0.0.1:$2/healthz" >/dev/null; do sleep 0.05; done
}
node 127.0.0.2 "$ha" a; pa=${pids[-1]}
node 127.0.0.3 "$hb" b; pb=${pids[-1]}
ticks() { awk '{s += $14 + $15} END {print s}' "/proc/$1/stat"; }
rcpu() { redis-cli -p "$rport" INFO cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}'; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
# Round trips of a node: the location store's writes and reads, and the nonce claims and
# failure counts (src/cluster.rs).
trips() { echo $(( $(metric "$1" sipward_redis_round_trips_total) + $(metric "$1" sipward_redis_auth_round_trips_total) )); }
ok() { curl -s "http://127.0.0.1:$1/metrics" | awk '$1 ~ /^sipward_register_outcomes_total/ && $1 ~ /outcome="(ok|refreshed|registered)"/ {s += $2} END {print s+0}'; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($(nproc) cores); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sipward: $bin ($(git rev-parse --short HEAD)); two nodes, $rate/s each for $secs s"
t0=$(( $(ticks "$pa") + $(ticks "$pb") )); c0=$(rcpu)
r0=$(( $(trips "$ha") + $(trips "$hb") ))
o0=$(( $(ok "$ha") + $(ok "$hb") ))
start=$(date +%s.%N)
"$loadgen" udp --target "127.0.0.2:$sport" --rate "$rate" --seconds "$secs" --users 5000 --first-user 100000 >"$dir/gen-a.txt" &
ga=$!
"$loadgen" udp --target "127.0.0.3:$sport" --rate "$rate" --seconds "$secs" --users 5000 --first-user 105000 >"$dir/gen-b.txt" &
gb=$!
wait "$ga" "$gb"
end=$(date +%s.%N)
echo "--- generator at A"; tail -4 "$dir/gen-a.txt"
echo "--- generator at B"; tail -4 "$dir/gen-b.txt"
t1=$(( $(ticks "$pa") + $(ticks "$pb") )); c1=$(rcpu)
r1=$(( $(trips "$ha") + $(trips "$hb") ))
o1=$(( $(ok "$ha") + $(ok "$hb") ))
hz=$(getconf CLK_TCK)
awk -v t0="$t0" -v t1="$t1" -v hz="$hz" -v c0="$c0" -v c1="$c1" -v r0="$r0" -v r1="$r1" \
    -v o0="$o0" -v o1="$o1" -v s="$start" -v e="$end" 'BEGIN {
  n = o1 - o0; if (n < 1) n = 1
  printf "successful REGISTERs at both nodes: %d in %.1f s of generation (%.0f/s aggregate)\n", o1 - o0, e - s, (o1 - o0) / (e - s)
  printf "sipward CPU (both nodes): %.2f s (%.1f us per registration)\n", (t1 - t0) / hz, (t1 - t0) / hz * 1e6 / n
  printf "Redis round trips: %d (%.3f per REGISTER); Redis CPU %.3f s (%.1f us per registration)\n", r1 - r0, (r1 - r0) / n, c1 - c0, (c1 - c0) * 1e6 / n
}'
