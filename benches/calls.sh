#!/usr/bin/env bash
# Calls through the proxy, sipward side by side with Kamailio (issue 22, the `calls` phase).
#
#   bash benches/calls.sh           rates 100 200 400 800 1200 1600 2000 2400 3200 4000 calls/s
#   RATES="200 400" STEP_SECONDS=10 bash benches/calls.sh
#
# Both servers run at once on 127.0.0.1 (different ports), each with its own SIPp callee (a UAS)
# and SIPp caller, and the rate steps alternate between them (Kamailio, then sipward, at each
# rate), so a change in the machine's load from other work hits both alike:
#   - Kamailio 5.6 as a stateful proxy: benches/kamailio/proxy.cfg (tm, registrar + usrloc in
#     memory, auth: 401 for REGISTER, 407 for INVITE, record_route, lookup, t_relay,
#     loose_route), CHILDREN=2 UDP workers, KAMAILIO_SHM_MB of shared memory (below).
#   - sipward (release build) with its default config plus what the benchmark needs: the UDP
#     listener, no TCP, the HTTP listener on a free port, log level warn, the domain bench.test
#     offering MD5 (SIPp answers MD5 only) and the same 20000 accounts as Kamailio's
#     (u100000..u119999, password "pw" + the number, given as HA1). The default config keeps
#     bindings in SQLite (persistence = "sqlite", location.db in the work directory); calls
#     do not write it.
# Before the steps, each server's callee user (u119999) registers from its callee's port with
# benches/sipp/reg-digest.xml, and the 1000 callers (u100000..u100999) from the caller's port.
# Each step: SIPp benches/sipp/call-caller.xml places RATE x STEP_SECONDS calls (INVITE, 407,
# ACK, INVITE with Proxy-Authorization, 100/180/200, ACK, BYE, 200; SIPp's -d pause between ACK
# and BYE, HOLD_MS, 0 by default) to the callee, answered by benches/sipp/call-callee.xml. The
# step is bounded by SIPp's -timeout (STEP_SECONDS + 5 s). Recorded per step: the server's CPU
# (utime + stime of the process and its children from /proc/PID/stat, over the caller's run)
# divided by the completed calls, the calls not completed (failed = placed - successful, as
# SIPp counts them), SIPp's retransmissions, and the caller's response times. A server whose
# step has a failed call is not stepped further; its highest clean call rate is the highest
# step with 0 failed calls. Both SIPp ends run with -default_behaviors all,-abortunexp: a
# message that comes late or out of order through a proxy with several workers (a 180 after
# the 200, a retransmitted INVITE after the 200, an ACK after the BYE) is logged and ignored,
# and a call that really fails still ends in SIPp's receive timeout (5 s).
#
# Loopback only, bounded: at most (number of rates) x 2 steps of STEP_SECONDS + 5 s, plus
# start and registration (about 10 s per server). Output: stdout and a copy in
# benches/results/DATE-COMMIT-calls.txt (OUT= to change). Needs Debian's kamailio, sip-tester
# and python3 (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RATES=${RATES:-"100 200 400 800 1200 1600 2000 2400 3200 4000"}
STEP_SECONDS=${STEP_SECONDS:-15}
HOLD_MS=${HOLD_MS:-0}
SERVERS=${SERVERS:-"kamailio sipward"}
SIPWARD=${SIPWARD:-target/release/sipward}
# Extra SIPp options for the callers and the callees, e.g. SIPP_EXTRA="-trace_msg" with KEEP=1
# (the work directory is then kept and its path printed) to see every message of a failed call.
SIPP_EXTRA=${SIPP_EXTRA:-}
# PERF=1: sample each step's server with `perf record -e cpu-clock -g` (software sampling, 999 Hz;
# its cost lands in the CPU figures, so profile in a run of its own) and write
# `perf report --no-children` to OUT with .perf-SERVER-RATE.txt in place of .txt.
PERF=${PERF:-}
# Kamailio's shared memory (-m, MB). tm takes about 10 KB of it per transaction (an 8 KB cell
# plus the cloned request) and keeps each 5 s after its final answer (wait timer), so 256 MB
# ran out at 1 600 calls/s ("out of mem" in new_t, 500 answers): 1024 MB leaves room to 4 000.
KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-1024}
# SIPP_NICE=-10 (root): run the SIPp callers and callees at that nice value, so other work on a
# shared machine stalls the generators less (the servers keep the default priority, alike).
SIPP_NICE=${SIPP_NICE:-0}
CALLERS=1000
CALLEE=u119999
DOMAIN=bench.test

missing=()
command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ -z "$PERF" ] || command -v perf >/dev/null 2>&1 || missing+=(linux-perf)
if ((${#missing[@]})); then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "calls: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get install -y "${missing[@]}"
fi
if [ "${SIPWARD}" = target/release/sipward ] && [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bin sipward
fi

WORK=$(mktemp -d /tmp/sipward-calls.XXXXXX)
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo '+local')
OUT=${OUT:-benches/results/$(date -u +%Y-%m-%d-%H%M)-${commit%+local}-calls.txt}
exec > >(tee "$OUT") 2>&1

declare -A PID PORT CALLER_PORT CALLEE_PORT CALLEE_PID CLEAN FAILED_AT
cleanup() {
  for s in $SERVERS; do
    for p in "${CALLEE_PID[$s]:-}" "${PID[$s]:-}"; do
      [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
  done
  sleep 1
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A free UDP port on 127.0.0.1, or TCP with "tcp" (the kernel's choice, released at once).
free_port() {
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1:] == ["tcp"] else socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$@"
}

# CPU ticks (utime + stime) of a process and all its descendants.
ticks() {
  local root=$1 pids total=0 p f
  pids=$(ps -e -o pid=,ppid= | awk -v r="$root" '
    { parent[$1] = $2 }
    END { keep[r] = 1; changed = 1
          while (changed) { changed = 0
            for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
          for (p in keep) print p }')
  for p in $pids; do
    if f=$(cat "/proc/$p/stat" 2>/dev/null); then
      f=${f##*) }
      # Fields after the command: state(1) ppid(2) ... utime(12) stime(13).
      total=$((total + $(awk '{ print $12 + $13 }' <<<"$f")))
    fi
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
# The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets of the
# machine: other work's drops count too).
rcvbuf_errors() { awk '/^Udp:/ && ++n == 2 { print $6 }' /proc/net/snmp; }
# Datagrams dropped on the UDP sockets bound to a local port (the last column of /proc/net/udp).
port_drops() {
  awk -v p="$(printf ':%04X' "$1")" 'NR > 1 && substr($2, length($2) - 4) == p { d += $NF } END { print d + 0 }' /proc/net/udp
}

python3 - "$WORK" "$CALLERS" "$CALLEE" "$DOMAIN" <<'EOF'
import hashlib, sys
work, callers, callee, domain = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def line(u):
    return f"{u};[authentication username={u} password=pw{u[1:]}]\n"
with open(f"{work}/callers.csv", "w") as f:
    f.write("SEQUENTIAL\n")
    for n in range(100000, 100000 + callers):
        f.write(line(f"u{n}"))
with open(f"{work}/callee.csv", "w") as f:
    f.write("SEQUENTIAL\n" + line(callee))
with open(f"{work}/accounts.toml", "w") as f:
    for n in range(100000, 120000):
        ha1 = hashlib.md5(f"u{n}:{domain}:pw{n}".encode()).hexdigest()
        f.write(f'[[accounts]]\nusername = "u{n}"\ndomain = "{domain}"\nkind = "device"\nha1_md5 = "{ha1}"\n')
EOF

start_server() {
  local s=$1 port
  port=$(free_port)
  PORT[$s]=$port
  case $s in
    kamailio)
      kamailio -f benches/kamailio/proxy.cfg -DD -E -m "$KAMAILIO_SHM_MB" -M 8 \
        -A "SIP_PORT=$port" -A "CTL_SOCK=\"unix:$WORK/kamailio.ctl\"" -A CHILDREN=2 \
        >"$WORK/kamailio.log" 2>&1 &
      PID[$s]=$!
      ;;
    sipward)
      {
        printf '# Written by benches/calls.sh: sipward defaults plus the benchmark users.\n'
        printf '[log]\nlevel = "warn"\n[sip]\nudp = ["127.0.0.1:%s"]\ntcp = []\n' "$port"
        printf '[http]\nlisten = "127.0.0.1:%s"\n' "$(free_port tcp)"
        printf '[[domains]]\nname = "%s"\nalgorithms = ["MD5"]\n' "$DOMAIN"
        cat "$WORK/accounts.toml"
      } >"$WORK/sipward.toml"
      "$SIPWARD" serve --config "$WORK/sipward.toml" >"$WORK/sipward.log" 2>&1 &
      PID[$s]=$!
      ;;
  esac
  # Ready when it answers an OPTIONS (any response).
  local i
  for i in $(seq 1 60); do
    if python3 - "$port" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5); s.bind(("127.0.0.1", 0))
a = s.getsockname()
s.sendto((f"OPTIONS sip:bench.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{a[1]};branch=z9hG4bKready{a[1]}\r\n"
          f"From: <sip:probe@bench.test>;tag=p\r\nTo: <sip:bench.test>\r\nCall-ID: ready-{a[1]}\r\n"
          "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", int(sys.argv[1])))
try:
    s.recv(4096)
except OSError:
    sys.exit(1)
EOF
    then return 0; fi
    kill -0 "${PID[$s]}" 2>/dev/null || { echo "$s exited:"; tail -20 "$WORK/$s.log"; exit 1; }
    sleep 0.5
  done
  echo "$s did not answer within 30 s"
  exit 1
}

# REGISTER every user of a CSV from a local port, all must succeed.
register() {
  local s=$1 csv=$2 lport=$3 count=$4
  local dir="$WORK/$s-reg-$lport"
  mkdir -p "$dir"
  (cd "$dir" && sipp -sf "$ROOT/benches/sipp/reg-digest.xml" -inf "$WORK/$csv" -m "$count" -r 500 \
    -i 127.0.0.1 -p "$lport" -auth_uri "$DOMAIN" -nostdin -timeout 30s -recv_timeout 5s \
    "127.0.0.1:${PORT[$s]}" >/dev/null 2>"$dir/stderr") || {
    echo "$s: registering $csv failed:"; tail -5 "$dir/stderr"; exit 1; }
}

# The causes of failed calls in SIPp's error logs of the caller's and the callee's directories,
# counted: an unexpected message (what the call expected, at which scenario index, and the
# first line it got) or a receive timeout (at which index).
failure_causes() {
  python3 - "$@" <<'EOF'
import collections, glob, re, sys
for d, who in zip(sys.argv[1:], ["caller", "callee"]):
    text = "".join(open(f, errors="replace").read() for f in glob.glob(f"{d}/*_errors.log"))
    causes = collections.Counter()
    for e in re.split(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ", text):
        if e.startswith("Dead call"):
            continue
        if e.startswith("Continuing call"):
            # -default_behaviors -abortunexp: a late 180 (after the 200), not a failure.
            m = re.search(r"received '([^\r\n]*)", e)
            causes[f"(not a failure: ignored late {m.group(1) if m else 'message'})"] += 1
            continue
        m = re.search(r"while (expecting '[^']*' \(index \d+\)|pausing \(index \d+\)), received '([^\r\n]*)", e)
        if m:
            causes[f"while {m.group(1)}, received {m.group(2)}"] += 1
        elif (m := re.search(r"receive timeout on message [^:]*:(\d+)", e)):
            causes[f"receive timeout at index {m.group(1)}"] += 1
        elif e.strip() and not e.startswith("The following events"):
            causes[e.strip().splitlines()[0][:100]] += 1
    for c, n in causes.most_common(5):
        print(f"    {who}: {n} x {c}")
EOF
}

# A field of the last line of a SIPp -trace_stat file, by its column name.
stat_field() {
  python3 - "$1" "$2" <<'EOF'
import sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
head, last = lines[0].split(";"), lines[-1].split(";")
print(last[head.index(sys.argv[2])] if sys.argv[2] in head and len(lines) > 1 else "")
EOF
}

echo "calls through the proxy (benches/calls.sh), commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "kamailio: $(kamailio -v | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p'); sipp: $(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*' | head -1); sipward: $SIPWARD"
echo "steps: $STEP_SECONDS s each, rates $RATES calls/s, call hold ${HOLD_MS} ms, $CALLERS callers calling $CALLEE, Kamailio shm ${KAMAILIO_SHM_MB} MB, SIPp nice $SIPP_NICE"

for s in $SERVERS; do
  start_server "$s"
  CALLEE_PORT[$s]=$(free_port)
  CALLER_PORT[$s]=$(free_port)
  register "$s" callee.csv "${CALLEE_PORT[$s]}" 1
  register "$s" callers.csv "${CALLER_PORT[$s]}" "$CALLERS"
  mkdir -p "$WORK/$s-callee"
  total_budget=$(( $(wc -w <<<"$RATES") * 2 * (STEP_SECONDS + 10) + 120 ))
  (cd "$WORK/$s-callee" && exec nice -n "$SIPP_NICE" sipp -sf "$ROOT/benches/sipp/call-callee.xml" -i 127.0.0.1 \
    -p "${CALLEE_PORT[$s]}" -nostdin -default_behaviors all,-abortunexp -trace_err $SIPP_EXTRA -timeout "${total_budget}s" "127.0.0.1:${PORT[$s]}" \
    >/dev/null 2>stderr) &
  CALLEE_PID[$s]=$!
  CLEAN[$s]=0
  echo "$s: pid ${PID[$s]}, udp 127.0.0.1:${PORT[$s]}, callee registered from :${CALLEE_PORT[$s]}, callers from :${CALLER_PORT[$s]}"
done
sleep 1

# failed = placed - done; of those, sipp_failed ended in an error SIPp saw (an unexpected
# message, a timeout), the rest were not finished when the step's -timeout struck.
# drops: UDP datagrams the kernel dropped on full receive buffers during the step (RcvbufErrors
# in /proc/net/snmp, every socket on the machine); a dropped datagram costs a retransmission.
# srv_dr: of those, the ones dropped on the server's own socket (its receivers fell behind).
# rtd2_ms: SIPp's mean time from the authenticated INVITE to its 200 (SIPp counts whole ms).
printf '\n%-9s %6s %7s %7s %6s %6s %7s %7s %8s %7s %6s %6s %6s %5s\n' server rate placed done failed sipp_f retrans cpu_s us/call rtd2_ms wall_s drops srv_dr load1
declare -A US
for rate in $RATES; do
  for s in $SERVERS; do
    [ -n "${FAILED_AT[$s]:-}" ] && continue
    calls=$((rate * STEP_SECONDS))
    dir="$WORK/$s-$rate"
    mkdir -p "$dir"
    if [ -n "$PERF" ]; then
      perf record -e cpu-clock -F 999 -g -p "${PID[$s]}" -o "$dir/perf.data" >/dev/null 2>&1 &
      perf_pid=$!
      sleep 1
    fi
    d0=$(rcvbuf_errors)
    s0=$(port_drops "${PORT[$s]}")
    t0=$(ticks "${PID[$s]}")
    w0=$(date +%s.%N)
    (cd "$dir" && nice -n "$SIPP_NICE" sipp -sf "$ROOT/benches/sipp/call-caller.xml" -inf "$WORK/callers.csv" \
      -s "$CALLEE" -auth_uri "$CALLEE@$DOMAIN" -d "$HOLD_MS" \
      -m "$calls" -r "$rate" -rp 1000 -l $((rate * 10)) \
      -i 127.0.0.1 -p "${CALLER_PORT[$s]}" -nostdin -timeout "$((STEP_SECONDS + 5))s" \
      -default_behaviors all,-abortunexp -recv_timeout 5s -trace_stat -fd 1 -stf stats.csv -trace_err $SIPP_EXTRA \
      "127.0.0.1:${PORT[$s]}" >/dev/null 2>stderr) || true
    w1=$(date +%s.%N)
    t1=$(ticks "${PID[$s]}")
    d1=$(rcvbuf_errors)
    s1=$(port_drops "${PORT[$s]}")
    if [ -n "$PERF" ]; then
      kill -INT "$perf_pid"; wait "$perf_pid" || true
      perf report -i "$dir/perf.data" --no-children --percent-limit 0.7 --stdio -g none \
        >"${OUT%.txt}.perf-$s-$rate.txt" 2>/dev/null || true
      perf report -i "$dir/perf.data" --children --percent-limit 3 --stdio -g caller,0.5,callee,function,percent \
        >"${OUT%.txt}.perf-$s-$rate-callers.txt" 2>/dev/null || true
    fi
    ok=$(stat_field "$dir/stats.csv" "SuccessfulCall(C)")
    ok=${ok:-0}
    retrans=$(stat_field "$dir/stats.csv" "Retransmissions(C)")
    sipp_failed=$(stat_field "$dir/stats.csv" "FailedCall(C)")
    rtd2=$(stat_field "$dir/stats.csv" "ResponseTime2(C)")
    failed=$((calls - ok))
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.2f", d / hz }')
    us=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$ok" 'BEGIN { if (n > 0) printf "%.0f", d / hz / n * 1e6; else print "-" }')
    rtd2_ms=$(python3 -c 'import sys
t = sys.argv[1].split(":") if sys.argv[1] else []
print(f"{(int(t[0])*3600+int(t[1])*60+int(t[2]))*1000+int(t[3])/1000:.2f}" if len(t) == 4 else "-")' "${rtd2:-}")
    wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", b - a }')
    printf '%-9s %6s %7s %7s %6s %6s %7s %7s %8s %7s %6s %6s %6s %5s\n' "$s" "$rate" "$calls" "$ok" "$failed" \
      "${sipp_failed:-?}" "${retrans:-?}" "$cpu" "$us" "$rtd2_ms" "$wall" "$((d1 - d0))" "$((s1 - s0))" "$(cut -d' ' -f1 /proc/loadavg)"
    US[$s,$rate]=$us
    if [ "$failed" -eq 0 ]; then
      CLEAN[$s]=$rate
    else
      FAILED_AT[$s]=$rate
      echo "  $s at $rate/s, failed calls by cause (SIPp's error logs):"
      failure_causes "$dir" "$WORK/$s-callee"
      kill -0 "${PID[$s]}" 2>/dev/null || echo "  $s exited: $(tail -3 "$WORK/$s.log" | tr '\n' ' ')"
    fi
  done
  all_failed=1
  for s in $SERVERS; do [ -z "${FAILED_AT[$s]:-}" ] && all_failed=0; done
  [ "$all_failed" -eq 1 ] && break
done

echo
echo "highest clean call rate (0 failed calls): $(for s in $SERVERS; do printf '%s %s/s  ' "$s" "${CLEAN[$s]}"; done)"
if [[ " $SERVERS " == *" kamailio "* && " $SERVERS " == *" sipward "* ]]; then
  echo "ratio sipward / kamailio, CPU per completed call at each rate both ran (* = failed calls in that step):"
  for rate in $RATES; do
    k=${US[kamailio,$rate]:-}; w=${US[sipward,$rate]:-}
    [[ "$k" =~ ^[0-9]+$ && "$w" =~ ^[0-9]+$ ]] || continue
    kf=" "; wf=" "
    [ "${FAILED_AT[kamailio]:-}" = "$rate" ] && kf="*"
    [ "${FAILED_AT[sipward]:-}" = "$rate" ] && wf="*"
    awk -v r="$rate" -v k="$k" -v w="$w" -v kf="$kf" -v wf="$wf" 'BEGIN { printf "  %5d/s: kamailio %5d us%s sipward %5d us%s ratio %.2f\n", r, k, kf, w, wf, w / k }'
  done
  k=${CLEAN[kamailio]}; w=${CLEAN[sipward]}
  if [ "$k" -gt 0 ]; then
    awk -v k="$k" -v w="$w" 'BEGIN { printf "highest clean rate ratio sipward / kamailio: %.2f\n", w / k }'
  fi
  last=$(echo "$RATES" | awk '{ print $NF }')
  for s in $SERVERS; do
    [ "${CLEAN[$s]}" = "$last" ] && echo "note: $s was clean at the highest rate tried ($last/s): its highest clean rate is at least that"
  done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
