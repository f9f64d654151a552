#!/usr/bin/env bash
# sipward side by side with Kamailio and a floor responder on this machine (issue 7).
#
#   bash benches/side-by-side.sh [loadgen compare options]      e.g. --phases sipp,tls
#
# Needs Kamailio 5.6 with its TLS module and SIPp 3.6 from Debian; this script installs nothing:
#   sudo apt-get install kamailio kamailio-tls-modules sip-tester
# Builds sipward and the generator in release mode, then runs `loadgen compare`
# (examples/loadgen/compare.rs): every server on 127.0.0.1 only, one at a time, bounded in
# count and time (about 20 minutes with the defaults). Results go to stdout; copy them into
# benches/RESULTS.md with the date, the commit and the load average the run printed.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in kamailio kamcmd sipp; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "side-by-side: missing ${missing[*]}; install with:" >&2
  echo "  sudo apt-get install kamailio kamailio-tls-modules sip-tester" >&2
  exit 1
fi
cargo build --release --bin sipward --example loadgen
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
exec target/release/examples/loadgen compare "$@"
