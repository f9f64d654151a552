#!/usr/bin/env bash
# Durable against in-memory sipward, paired: both servers run at once, each with its own
# generator at the same rate over the same window, so whatever else the machine is doing
# (other builds, a noisy neighbour) weighs on both alike. Prints the server CPU per
# registration of each (per completed registration) and their ratio (issue 16's target:
# durable at most 1.25x).
#
#   cargo build --release --bin sipward --example loadgen
#   bash benches/paired-durable.sh [RATE:SECONDS ...]     # default 2000:15 4000:15 8000:10 16000:8
#
# Environment: SIPWARD (release binary), LOADGEN (release loadgen), DURABLE_TOML (extra lines
# for the durable server's [registrar] table, e.g. "store_commit_interval_ms = 0").
# CPU is read from /proc/PID/stat (utime + stime, clock ticks) before and after each window.
set -euo pipefail
cd "$(dirname "$0")/.."
sipward="${SIPWARD:-target/release/sipward}"
loadgen="${LOADGEN:-target/release/examples/loadgen}"
steps=("$@")
((${#steps[@]})) || steps=(2000:15 4000:15 8000:10 16000:8)
work="$(mktemp -d /tmp/sipward-paired-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$loadgen" sipward-config --udp 127.0.0.1:15070 --http 127.0.0.1:18090 > "$work/memory.toml"
"$loadgen" sipward-config --udp 127.0.0.1:15060 --http 127.0.0.1:18080 > "$work/durable.toml"
extra="${DURABLE_TOML:-}"
python3 - "$work/durable.toml" "$work/location.db" "$extra" <<'EOF'
import sys
path, db, extra = sys.argv[1], sys.argv[2], sys.argv[3]
s = open(path).read()
lines = f'persistence = "sqlite"\nstore_path = "{db}"\n' + (extra + "\n" if extra else "")
s = s.replace('persistence = "none"\n', lines, 1)
open(path, "w").write(s)
EOF

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
echo "# paired durable/in-memory run $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "# machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# durable [registrar] extra: ${extra:-none}"
for step in "${steps[@]}"; do
  rate="${step%%:*}" secs="${step##*:}"
  rm -f "$work"/location.db*
  "$sipward" serve --config "$work/memory.toml" > "$work/memory.log" 2>&1 &
  pm=$!
  "$sipward" serve --config "$work/durable.toml" > "$work/durable.log" 2>&1 &
  pd=$!
  pids=("$pm" "$pd")
  for port in 18090 18080; do
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break
      sleep 0.1
    done
  done
  # Warm-up: every one of the 10 000 users registers once on both servers.
  "$loadgen" udp --target 127.0.0.1:15070 --rate 4000 --count 10000 > /dev/null 2>&1 &
  g=$!
  "$loadgen" udp --target 127.0.0.1:15060 --rate 4000 --count 10000 > /dev/null 2>&1
  wait "$g"
  m0=$(ticks "$pm") d0=$(ticks "$pd")
  "$loadgen" udp --target 127.0.0.1:15070 --rate "$rate" --seconds "$secs" > "$work/gm.txt" 2>&1 &
  g=$!
  "$loadgen" udp --target 127.0.0.1:15060 --rate "$rate" --seconds "$secs" > "$work/gd.txt" 2>&1
  wait "$g"
  m1=$(ticks "$pm") d1=$(ticks "$pd")
  kill "$pm" "$pd"
  wait "$pm" "$pd" 2> /dev/null || true
  pids=()
  # Per completed registration: a window the machine could not keep up with (timeouts)
  # still divides by what each server did.
  done_m="$(sed -n 's/.*completed \([0-9]*\).*/\1/p' "$work/gm.txt" | head -1)"
  done_d="$(sed -n 's/.*completed \([0-9]*\).*/\1/p' "$work/gd.txt" | head -1)"
  awk -v r="$rate" -v s="$secs" -v hz="$hz" -v m="$((m1 - m0))" -v d="$((d1 - d0))" \
    -v nm="${done_m:-0}" -v nd="${done_d:-0}" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
      if (nm == 0 || nd == 0) { printf "rate %d/s x %ds: no registration completed\n", r, s; exit }
      mc = m * 1e6 / hz / nm; dc = d * 1e6 / hz / nd
      printf "rate %d/s x %ds: in memory %.1f us/registration, durable %.1f us, durable/in memory %.2fx; load %s\n", r, s, mc, dc, dc / mc, load }'
  grep -h "completed" "$work/gm.txt" "$work/gd.txt" | sed 's/^ */   /'
done
