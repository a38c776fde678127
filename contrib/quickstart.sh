#!/usr/bin/env bash
# cairn's main job on an embedded default: a local-directory repository, no server needed.
# Builds cairn, creates an encrypted repository under ./cairn-demo/repo, backs up a directory tree
# and a database-dump-like stream (twice, as two nights would), verifies every byte with
# `check --read-data`, restores into ./cairn-demo/restore and compares with the source.
# Usage: contrib/quickstart.sh [DIRECTORY_TO_BACK_UP]   (default: this source tree)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source_dir=$(cd "${1:-$here/store}" && pwd)
demo="$here/cairn-demo"
cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p cairn-cli
cairn="$here/target/release/cairn"
rm -rf "$demo" && mkdir -p "$demo"
export CAIRN_REPOSITORY="$demo/repo" CAIRN_CACHE_DIR="$demo/cache"
export CAIRN_PASSWORD="${CAIRN_PASSWORD:-demo-password-change-me}"
"$cairn" init
echo "== night 1: a directory tree and a stream"
"$cairn" backup "$source_dir" --tag nightly
# A stand-in for `mongodump --archive` or `pg_dump`: any command's stdout can be streamed in.
dump() { for night in "$@"; do seq 1 200000 | sed "s/^/row $night /"; done; }
dump 1 | "$cairn" backup --stdin --stdin-name app.archive --tag nightly
echo "== night 2: unchanged tree (adds almost nothing), slightly changed stream"
"$cairn" backup "$source_dir" --tag nightly
{ dump 1; echo "one more row"; } | "$cairn" backup --stdin --stdin-name app.archive --tag nightly
"$cairn" snapshots
echo "== verify every byte of the repository"
"$cairn" check --read-data
echo "== restore drill"
"$cairn" restore "$("$cairn" snapshots --json | grep -v app.archive | tail -n 1 | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/')" --target "$demo/restore"
diff -r --no-dereference "$source_dir" "$demo/restore$source_dir" && echo "restored tree is identical to the source"
"$cairn" dump latest app.archive | cmp - <({ dump 1; echo "one more row"; }) && echo "dumped stream is identical"
