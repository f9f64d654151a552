#!/usr/bin/env bash
# Paired run: in-memory and durable sipward side by side, each with its own generator at the
# same rate over the same window, so machine noise hits both alike.
set -u
bin=/work/main/target/release
rate=$1; secs=$2
cd /tmp/prof
rm -f loc.db*
setsid $bin/sipward serve --config mem2.toml > mem.log 2>&1 < /dev/null &
setsid $bin/sipward serve --config base.toml > dur.log 2>&1 < /dev/null &
sleep 2
pm=$(pgrep -f "config mem2.toml"); pd=$(pgrep -f "config base.toml")
# warm-up: every user registers once on both
$bin/examples/loadgen udp --target 127.0.0.1:15070 --rate 4000 --count 10000 > /dev/null 2>&1 &
g=$!
$bin/examples/loadgen udp --target 127.0.0.1:15060 --rate 4000 --count 10000 > /dev/null 2>&1
wait $g
if [ "${DROPIDX:-}" = 1 ]; then python3 -c "import sqlite3; c=sqlite3.connect('/tmp/prof/loc.db'); c.execute('DROP INDEX IF EXISTS bindings_expires_at'); c.commit()"; fi
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
m0=$(ticks $pm); d0=$(ticks $pd)
$bin/examples/loadgen udp --target 127.0.0.1:15070 --rate $rate --seconds $secs > gm.txt 2>&1 &
g=$!
$bin/examples/loadgen udp --target 127.0.0.1:15060 --rate $rate --seconds $secs > gd.txt 2>&1
wait $g
m1=$(ticks $pm); d1=$(ticks $pd)
n=$(awk -v r=$rate -v s=$secs 'BEGIN{print r*s}')
mc=$(awk -v a=$m0 -v b=$m1 -v n=$n 'BEGIN{printf "%.1f", (b-a)*10000/n}')
dc=$(awk -v a=$d0 -v b=$d1 -v n=$n 'BEGIN{printf "%.1f", (b-a)*10000/n}')
echo "rate $rate/s x ${secs}s: memory ${mc} us/reg, durable ${dc} us/reg, ratio $(awk -v a=$mc -v b=$dc 'BEGIN{printf "%.2f", b/a}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
grep -h "completed" gm.txt gd.txt | sed 's/^/   /'
kill $pm $pd; sleep 1
