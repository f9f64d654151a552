#!/bin/bash
# usage: measure2.sh BINARY LABEL
# A fresh server with mimalloc purging freed memory at once (MIMALLOC_PURGE_DELAY=0), so RSS
# follows live memory: RSS R0 after 10 s idle; 10 000 SIPp registrations of 10 000 users;
# R1 at once (their transactions held), R2 45 s later (transactions ended).
BIN=$1; LABEL=$2; cd /tmp/txn-mem
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
metric() { curl -s http://127.0.0.1:28080/metrics | awk -v m="$1" '$1 == m {print $2}'; }
MIMALLOC_PURGE_DELAY=0 $BIN serve --config sipward.toml > server-$LABEL.log 2>&1 &
PID=$!
sleep 10
R0=$(rss $PID)
timeout 120 sipp -sf /work/wt-txn/benches/sipp/reg-digest.xml -inf users.csv -m 10000 -r 2000 -rp 1000 -l 20000 \
  -i 127.0.0.1 -p 25070 -auth_uri bench.test -nostdin -timeout 90s -recv_timeout 10s \
  127.0.0.1:25060 > sipp-$LABEL.out 2>&1
grep -h "Successful call\|Failed call" sipp-$LABEL.out | awk '{print "  " $1, $2, $6}'
R1=$(rss $PID); T1=$(metric sipward_transactions); B1=$(metric sipward_bindings)
sleep 45
R2=$(rss $PID); T2=$(metric sipward_transactions)
kill $PID; wait $PID 2>/dev/null
echo "$LABEL: RSS $R0 KiB idle; $R1 KiB right after 10000 registrations (transactions gauge $T1, bindings $B1): $(( (R1 - R0) * 1024 / 10000 )) B/registration; $R2 KiB 45 s later (transactions $T2): $(( (R2 - R0) * 1024 / 10000 )) B/binding; difference $(( (R1 - R2) * 1024 / 10000 )) B"
