#!/usr/bin/env bash
# Bandwidth limits (issue 19): does `--limit-upload` hold its rate while a large backup runs, and
# `--limit-download` while it is restored?
#
#   benches/bandwidth.sh [--size-mib N] [--rate RATE] [--repo LOCATION] [--scratch DIR] [--out FILE]
#
# Builds cairn (release, CARGO_TARGET_DIR, default /tmp/bench-target) unless CAIRN names a binary.
# Writes N MiB (default 1024) of incompressible data (so every byte is uploaded), backs it up with
# `--limit-upload RATE` (default 32M, i.e. 32 MiB/s) into a fresh repository (default: a local
# directory under SCRATCH; `--repo s3://bucket/prefix` with the usual AWS_* variables for a
# store), then restores it with `--limit-download RATE`. While each runs, the bytes the store has
# moved so far are sampled every second (the repository's size for uploads; the restored bytes for
# downloads), and the script reports the rate of every 5-second window after the first 5 seconds
# (the bucket's burst and the first pack's chunking), and the whole run's rate from cairn's own
# request counters (`--verbose --json`: bytes_sent / bytes_received over the wall time). It fails
# (exit 1) when the whole-run rate or the median window is off the limit by more than 10 %. A
# single window may be off by one pack (16 MiB by default): a request waits for its whole body,
# then moves at the link's speed, so bytes arrive a pack at a time. Writes benches/results/bandwidth.md; the data and repository are deleted.
set -euo pipefail

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCHES/.." && pwd)
SIZE_MIB=1024
RATE=32M
REPO=
SCRATCH=${TMPDIR:-/tmp}/cairn-bandwidth
OUT=$BENCHES/results/bandwidth.md
while [ $# -gt 0 ]; do
  case $1 in
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --repo) REPO=${2:?}; shift 2 ;;
    --scratch) SCRATCH=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bandwidth.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
log() { echo "[bandwidth $(date +%T)] $*" >&2; }

if [ -z "${CAIRN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
  log "building cairn (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --quiet -p cairn-cli)
  CAIRN=$CARGO_TARGET_DIR/release/cairn
fi
# The limit in bytes per second, as cairn reads it (a bare number is KiB/s).
LIMIT=$(python3 - "$RATE" <<'PY'
import re, sys
text = sys.argv[1].strip()
text = text[:-2].strip() if text.endswith("/s") else text
number, unit = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", text).groups()
unit = unit.lower().removesuffix("ib").removesuffix("b")
scale = {"": 1024 if not re.search(r"[A-Za-z]", text) else 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
print(int(float(number) * scale))
PY
)

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
trap 'rm -rf "$SCRATCH"' EXIT
export CAIRN_PASSWORD=bandwidth-bench CAIRN_CACHE_DIR=$SCRATCH/cache
LOCAL_REPO=
if [ -z "$REPO" ]; then
  REPO=$SCRATCH/repo
  LOCAL_REPO=$REPO
fi
export CAIRN_REPOSITORY=$REPO

log "writing $SIZE_MIB MiB of random data"
mkdir -p "$SCRATCH/data"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$SCRATCH/data/blob.bin"
"$CAIRN" init --kdf-memory-mib 8 --kdf-iterations 1 >/dev/null

# Samples the byte count printed by the command $2 every second into file $1 until the file
# $1.done exists; each line: seconds since start, bytes.
sample() {
  local out=$1 probe=$2 start
  start=$(date +%s.%N)
  while [ ! -e "$out.done" ]; do
    echo "$(echo "$(date +%s.%N) - $start" | bc) $(eval "$probe" 2>/dev/null || echo 0)" >>"$out"
    sleep 1
  done
}

# Runs cairn with the JSON summary to $1.json, sampling with probe $2; prints wall seconds.
timed_run() {
  local name=$1 probe=$2 started ended
  shift 2
  : >"$SCRATCH/$name.samples"
  sample "$SCRATCH/$name.samples" "$probe" &
  local sampler=$!
  started=$(date +%s.%N)
  "$CAIRN" --json --verbose "$@" >"$SCRATCH/$name.json"
  ended=$(date +%s.%N)
  touch "$SCRATCH/$name.samples.done"
  wait "$sampler"
  echo "$ended - $started" | bc
}

if [ -n "$LOCAL_REPO" ]; then
  upload_probe="du -sb '$LOCAL_REPO' | cut -f1"
else
  upload_probe="echo 0"
fi
# The bytes cairn's request counters moved in direction $2 (bytes_sent, bytes_received), from
# the `requests` line of the JSON output $1.
moved() {
  python3 - "$1" "$2" <<'PY'
import json, sys
found = [json.loads(line) for line in open(sys.argv[1]) if '"requests"' in line]
lines = [value for value in found if value.get("message_type") == "requests"]
if not lines:
    sys.exit(f"no requests line in {sys.argv[1]}")
print(lines[-1][sys.argv[2]])
PY
}

log "backup with --limit-upload $RATE ($LIMIT B/s)"
up_secs=$(timed_run backup "$upload_probe" --limit-upload "$RATE" backup "$SCRATCH/data")
up_bytes=$(moved "$SCRATCH/backup.json" bytes_sent)
log "restore with --limit-download $RATE"
mkdir -p "$SCRATCH/restored"
down_secs=$(timed_run restore "du -sb '$SCRATCH/restored' | cut -f1" --limit-download "$RATE" restore latest --target "$SCRATCH/restored")
down_bytes=$(moved "$SCRATCH/restore.json" bytes_received)
cmp "$SCRATCH/data/blob.bin" "$SCRATCH/restored/$SCRATCH/data/blob.bin"

# One table row, and a failure message on stderr when the rate misses the limit: the whole run
# or the median window off by more than 10 %.
report() { # name secs bytes samples
  python3 - "$@" "$LIMIT" "$SIZE_MIB" <<'PY'
import sys
name, secs, moved, samples, limit, size = sys.argv[1:7]
secs, moved, limit = float(secs), float(moved), float(limit)
rows = [tuple(map(float, line.split())) for line in open(samples) if line.strip()]
windows = []
for index, (t0, b0) in enumerate(rows):
    if t0 < 5 or index % 5:
        continue
    later = [(t, b) for (t, b) in rows if t >= t0 + 5]
    if later and later[0][1] > b0:
        t1, b1 = later[0]
        windows.append((b1 - b0) / (t1 - t0))
rate = moved / secs
if windows:
    windows.sort()
    shown = f"{windows[0]:.0f} / {windows[len(windows) // 2]:.0f} / {windows[-1]:.0f} ({len(windows)})"
else:
    shown = "none"
print(f"| {name} | {size} MiB | {limit:.0f} | {moved:.0f} | {secs:.1f} | {rate:.0f} | {rate / limit * 100 - 100:+.1f} % | {shown} |")
if abs(rate / limit - 1) > 0.10:
    print(f"{name}: whole-run rate {rate:.0f} B/s is not within 10 % of {limit:.0f}", file=sys.stderr)
median = windows[len(windows) // 2] if windows else rate
if abs(median / limit - 1) > 0.10:
    print(f"{name}: the median window ran at {median:.0f} B/s, not within 10 % of the limit", file=sys.stderr)
PY
}
{
  echo "# Bandwidth limits"
  echo
  echo "benches/bandwidth.sh --size-mib $SIZE_MIB --rate $RATE, repository $( [ -n "$LOCAL_REPO" ] && echo "local directory" || echo "$REPO"), $(date -u +%Y-%m-%d), $(nproc) cores."
  echo "Rates in bytes per second. Windows: the rate of 5-second windows after the first 5 s, from"
  echo "the bytes stored so far (repository size for uploads to a local directory, restored bytes"
  echo "for downloads): min / median / max (count); one window may be off by a pack, as bytes move"
  echo "a request (a 16 MiB pack) at a time. Whole run: cairn's request counters over wall time."
  echo
  echo "| direction | data | limit | bytes moved | seconds | whole-run rate | vs limit | windows |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  report upload "$up_secs" "$up_bytes" "$SCRATCH/backup.samples" 2>>"$SCRATCH/failures"
  report download "$down_secs" "$down_bytes" "$SCRATCH/restore.samples" 2>>"$SCRATCH/failures"
} | tee "$OUT"
if [ -s "$SCRATCH/failures" ]; then
  cat "$SCRATCH/failures" >&2
  exit 1
fi
