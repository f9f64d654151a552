#!/usr/bin/env bash
# Redis-side cost of registrations on Redis (issue 17): round trips per REGISTER and Redis CPU
# per registration, one sipward node on one redis-server, at a fixed UDP REGISTER rate.
#
#   bash benches/redis.sh [SIPWARD_BINARY] [RATE] [SECONDS]
#
# Everything on 127.0.0.1, bounded (RATE x SECONDS registrations, 10 000 users). Needs
# redis-server and redis-cli (apt-get install redis-server) and the load generator
# (cargo build --release --example loadgen). Prints the figures; copy them into
# benches/RESULTS.md with the CPU model and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/sipward}
rate=${2:-1000}
secs=${3:-10}
loadgen=${LOADGEN:-target/release/examples/loadgen}
dir=$(mktemp -d)
rport=$((20000 + RANDOM % 5000)); sport=$((rport + 1)); hport=$((rport + 2))
cleanup() { [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null; [ -n "${rpid:-}" ] && kill "$rpid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
rpid=$!
until redis-cli -p "$rport" PING >/dev/null 2>&1; do sleep 0.05; done
"$loadgen" sipward-config --udp "127.0.0.1:$sport" --http "127.0.0.1:$hport" \
  | sed "s/^persistence = \"none\"/persistence = \"redis\"\n\n[redis]\nurls = [\"redis:\/\/127.0.0.1:$rport\"]\nnode = \"bench\"\n\n[registrar_end]/" \
  | sed '/^\[registrar_end\]$/d' >"$dir/sipward.toml"
"$bin" serve --config "$dir/sipward.toml" 2>"$dir/sipward.log" &
spid=$!
until curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null; do sleep 0.05; done
cpu() { redis-cli -p "$rport" INFO cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}'; }
metric() { curl -s "http://127.0.0.1:$hport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($(nproc) cores); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sipward: $bin ($(git rev-parse --short HEAD)); rate $rate/s for $secs s"
c0=$(cpu); rt0=$(metric sipward_redis_round_trips_total); sc0=$(metric sipward_redis_scripts_total); at0=$(metric sipward_redis_auth_round_trips_total)
"$loadgen" udp --target "127.0.0.1:$sport" --rate "$rate" --seconds "$secs" --users 10000 | tail -4
c1=$(cpu); rt1=$(metric sipward_redis_round_trips_total); sc1=$(metric sipward_redis_scripts_total); at1=$(metric sipward_redis_auth_round_trips_total)
ok=$(curl -s "http://127.0.0.1:$hport/metrics" | awk '$1 ~ /^sipward_register_outcomes_total/ && $1 ~ /outcome="(ok|refreshed|registered)"/ {s += $2} END {print s+0}')
keys=$(redis-cli -p "$rport" DBSIZE)
awk -v c0="$c0" -v c1="$c1" -v r0="$rt0" -v r1="$rt1" -v s0="$sc0" -v s1="$sc1" -v a0="$at0" -v a1="$at1" -v ok="$ok" -v keys="$keys" 'BEGIN {
  n = ok; if (n < 1) n = 1
  printf "successful REGISTERs (outcome counters): %d; Redis keys after: %d\n", ok, keys
  printf "Redis round trips of the location store: %d (%.3f per REGISTER); scripts: %d (%.3f per REGISTER)\n", r1 - r0, (r1 - r0) / n, s1 - s0, (s1 - s0) / n
  printf "Redis round trips for nonce claims and failures: %d (%.3f per REGISTER); all: %.3f per REGISTER\n", a1 - a0, (a1 - a0) / n, (r1 - r0 + a1 - a0) / n
  printf "Redis CPU: %.3f s (%.1f us per registration)\n", c1 - c0, (c1 - c0) * 1e6 / n
}'
