#!/usr/bin/env bash
# Crash test under load (issue 16): a generator registers 200 phones continuously over UDP
# (each re-registers as soon as its previous REGISTER was answered) and records every 200 OK;
# sipward (release build, registrar.persistence = "sqlite") is killed with SIGKILL at a random
# moment (0.8-2 s into the round) and restarted with the same config; every AoR must hold its
# binding with at least the CSeq of its last 200 (0 lost). ITERATIONS rounds in one run
# against one store file (default 20). Prints one line per round; loopback only.
#
#   bash benches/crash-loop.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin sipward
SIPWARD_BIN="$CARGO_TARGET_DIR/release/sipward" SIPWARD_CRASH_ITERATIONS="$iterations" \
    cargo test --test durable kill_9_under_load_loses_no_acknowledged_registration -- --nocapture 2>&1 \
    | grep -E "crash round|test result|panicked|lost"
