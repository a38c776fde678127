#!/usr/bin/env bash
# A long soak of the garbage-collection simulation (FORMAT.md 21.9): the specification with the
# liveness rule over many seeded schedules, in a release build, four test threads.
#
#   benches/sim-soak.sh [SCHEDULES] [FIRST_SEED]
#
# SCHEDULES defaults to 10,000,000 (about a minute of CPU per million schedules in release, measured
# on the 2-core development machine; the first run also builds cairn-store's tests in release);
# FIRST_SEED to 0, so successive soaks can cover new seeds. A failure prints the seed, the broken
# invariant, the schedule's trace and the command that replays it, and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
schedules="${1:-10000000}"
first_seed="${2:-0}"
echo "soak: $schedules schedules from seed $first_seed"
start=$(date +%s)
CAIRN_SIM_SCHEDULES="$schedules" CAIRN_SIM_FIRST_SEED="$first_seed" \
    cargo test --release -p cairn-store --lib sim::tests::spec_holds -- --nocapture --test-threads 4
echo "soak: $schedules schedules passed in $(( $(date +%s) - start )) s"
