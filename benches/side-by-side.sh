#!/usr/bin/env bash
# sipward side by side with Kamailio and a floor responder on this machine (issues 7 and 13).
#
#   bash benches/side-by-side.sh [loadgen compare options]      e.g. --phases max,storm
#
# Needs Kamailio 5.6 with its TLS module and SIPp 3.6 from Debian: installs what is missing
# with apt-get (through sudo when not root). Builds sipward and the generator in release mode,
# then runs `loadgen compare` (examples/loadgen/compare.rs): every server on 127.0.0.1 only,
# one at a time, bounded in count and time (about 50 minutes with every phase, of which the
# `storm` phase takes 2 x 300 s per storm rate). sipward runs with its default limits. Results
# go to stdout; copy them into benches/RESULTS.md with the date, the commit and the load
# average the run printed, and keep the raw output under benches/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
command -v kamcmd >/dev/null 2>&1 || missing+=(kamailio)
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
if ! ls /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1; then
  missing+=(kamailio-tls-modules)
fi
# For the kamailio-sqlite row (usrloc db_mode=1 on db_sqlite, issue 16).
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/db_sqlite.so ] || missing+=(kamailio-sqlite-modules)
if ((${#missing[@]})); then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "side-by-side: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get install -y "${missing[@]}"
fi
cargo build --release --bin sipward --example loadgen
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
exec target/release/examples/loadgen compare "$@"
