#!/usr/bin/env bash
# The full matrix of `cairn copy`'s kill-and-resume tests (tests/it/copy.rs), which CI runs as a
# small cell to keep the suite's time down: here with a corpus holding a file larger than a copy's
# read batch (32 MiB), a 12 MB file across stores, and three to four SIGKILLs per run, local to
# local, local to S3 (moto) and S3 to Azure (Azurite), ROUNDS times over.
#
#   tests/soak/copy-kill.sh [ROUNDS]
#
# ROUNDS defaults to 3 (about 15 minutes per round in a debug build on the 2-core development
# machine). The servers are started by tests/servers.sh, on 127.0.0.1 only. A failure stops the
# soak and prints the test's output.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
# shellcheck disable=SC1091
source tests/servers.sh
start_test_servers
trap stop_test_servers EXIT
start=$(date +%s)
for round in $(seq 1 "$rounds"); do
  echo "copy-kill soak: round $round of $rounds"
  CAIRN_TEST_SOAK=1 CAIRN_TEST_REQUIRE_SERVERS=1 cargo test -p cairn-cli --test it -- \
    copy::a_copy_killed_mid_way_resumes_without_sending_again \
    copy::a_destination_that_chunks_differently_rechunks_and_says_so \
    copy::local_to_s3_is_killed_resumed_and_restores \
    copy::s3_to_azure_is_killed_resumed_and_restores
done
echo "copy-kill soak: $rounds rounds passed in $(( $(date +%s) - start )) s"
