#!/bin/bash
# Issue 22: RSS growth of a fresh sipward right after 10 000 SIPp registrations (10 000 users,
# one binding each, their server transactions held), and 45 s later (transactions ended).
# mimalloc returns freed memory at once (MIMALLOC_PURGE_DELAY=0), so RSS follows live memory.
# Loopback only, bounded: 10 000 registrations at 2 000/s.
#
#     cargo build --release --example loadgen --bin sipward
#     bash benches/txn-memory.sh [SIPWARD_BINARY] [LABEL]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/sipward}
LABEL=${2:-sipward}
LOADGEN=${LOADGEN:-$ROOT/target/release/examples/loadgen}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$LOADGEN" sipward-config | sed 's|127.0.0.1:5060|127.0.0.1:25060|; s|127.0.0.1:8080|127.0.0.1:28080|' > sipward.toml
{ echo SEQUENTIAL; for n in $(seq 100000 109999); do echo "u$n;[authentication username=u$n password=pw$n]"; done; } > users.csv
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
metric() { curl -s http://127.0.0.1:28080/metrics | awk -v m="$1" '$1 == m {print $2}'; }
MIMALLOC_PURGE_DELAY=0 "$BIN" serve --config sipward.toml > server.log 2>&1 &
PID=$!
sleep 10
R0=$(rss $PID)
timeout 120 sipp -sf "$ROOT/benches/sipp/reg-digest.xml" -inf users.csv -m 10000 -r 2000 -rp 1000 -l 20000 \
  -i 127.0.0.1 -p 25070 -auth_uri bench.test -nostdin -timeout 90s -recv_timeout 10s \
  127.0.0.1:25060 > sipp.out 2>&1 || true
grep -h "Successful call\|Failed call" sipp.out | awk '{print "  " $1, $2, $6}'
R1=$(rss $PID); T1=$(metric sipward_transactions); B1=$(metric sipward_bindings)
sleep 45
R2=$(rss $PID); T2=$(metric sipward_transactions)
kill $PID; wait $PID 2>/dev/null || true
echo "$LABEL: RSS $R0 KiB idle; $R1 KiB right after 10000 registrations (transactions gauge $T1, bindings $B1): $(( (R1 - R0) * 1024 / 10000 )) B/registration; $R2 KiB 45 s later (transactions $T2): $(( (R2 - R0) * 1024 / 10000 )) B/binding"
