#!/usr/bin/env bash
# The one command that runs every test of cairn: unit, property, format vectors and fixtures,
# fault injection and the CLI end to end. Real object-store servers used by the backend tests are
# installed (cached under .cache/) and started on 127.0.0.1 by tests/servers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x tests/servers.sh ]; then
  # shellcheck disable=SC1091
  source tests/servers.sh
  start_test_servers
  trap stop_test_servers EXIT
  if [ "${CAIRN_TEST_SIGNED_S3:-0}" = 1 ]; then
    start_signed_s3
  fi
fi
cargo test --workspace --all-targets "$@"
