#!/usr/bin/env bash
# Read throughput through `cairn mount` (issue 16): a large stream read sequentially through the
# mount (`dd bs=1M` to /dev/null) against `cairn dump` of the same stream to /dev/null, best of
# two each; the mount's peak RSS while reading (VmHWM); and what a 1 MiB read in the middle of
# the stream downloads (`cairn -v mount` reports its requests at the end).
#
#   benches/mount.sh [--size-mib 512] [--scratch DIR] [--out FILE] [--keep] [--others]
#
# With --others it also backs the stream up with restic and borg and reads it through
# `restic mount` and `borg mount` (llfuse or pyfuse3) the same way, for their peak RSS.
#
# The stream is database-dump-like: alternating 1 MiB runs of random bytes and of base64 text
# (compresses about 4:3), from a fixed AES-CTR key stream. Release build, local repository on
# the scratch directory, default repository settings. Needs /dev/fuse and fusermount (fuse3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=512
SCRATCH=${TMPDIR:-/tmp}/cairn-mount-bench
OUT=$ROOT/benches/results/mount.md
KEEP=0
OTHERS=0
while [ $# -gt 0 ]; do
  case $1 in
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --scratch) SCRATCH=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --others) OTHERS=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "mount.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
log() { echo "[mount $(date +%T)] $*" >&2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
log "building cairn (release)"
(cd "$ROOT" && cargo build --release --quiet -p cairn-cli)
CAIRN=$CARGO_TARGET_DIR/release/cairn
FUSERMOUNT=$(command -v fusermount3 || command -v fusermount) || { echo "mount.sh: no fusermount (apt-get install fuse3)" >&2; exit 1; }

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/mnt"
export CAIRN_REPOSITORY=$SCRATCH/repo CAIRN_CACHE_DIR=$SCRATCH/cache CAIRN_PASSWORD=mount-bench
STREAM=$SCRATCH/dump.bin
log "generating a $SIZE_MIB MiB stream"
python3 - "$STREAM" "$SIZE_MIB" <<'PY'
import base64, hashlib, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as out:
    for block in range(mib):
        seed = hashlib.sha256(b"cairn-mount-bench-%d" % block).digest()
        raw = b"".join(hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(32768))
        out.write(raw if block % 2 == 0 else base64.b64encode(raw)[: 1 << 20])
PY
"$CAIRN" init -q
"$CAIRN" backup -q --stdin --name dump.bin <"$STREAM"

mounted() { grep -q " $SCRATCH/mnt " /proc/self/mountinfo; }
start_mount() { # log file
  "$CAIRN" -v mount "$SCRATCH/mnt" 2>"$1" &
  MOUNT_PID=$!
  for _ in $(seq 1 600); do mounted && return 0; sleep 0.1; done
  echo "mount.sh: not mounted" >&2; cat "$1" >&2; exit 1
}
stop_mount() { "$FUSERMOUNT" -u "$SCRATCH/mnt"; wait "$MOUNT_PID"; }
seconds() { # command...: wall seconds
  local start end
  start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N)
  echo "$start $end" | awk '{printf "%.2f", $2 - $1}'
}
best() { printf '%s\n' "$@" | sort -n | head -1; }
rate() { awk -v mib="$SIZE_MIB" -v s="$1" 'BEGIN {printf "%.0f", mib / s}'; }

dump_times=() mount_times=() peaks=()
for rep in 1 2; do
  log "repetition $rep: dump"
  dump_times+=("$(seconds "$CAIRN" dump latest dump.bin)")
  log "repetition $rep: dd through the mount"
  start_mount "$SCRATCH/mount-$rep.log"
  mount_times+=("$(seconds dd if="$SCRATCH/mnt/snapshots/latest/dump.bin" of=/dev/null bs=1M)")
  cmp -s "$SCRATCH/mnt/snapshots/latest/dump.bin" "$STREAM" || { echo "mount.sh: bytes differ" >&2; exit 1; }
  peaks+=("$(awk '/^VmHWM/ {print $2}' "/proc/$MOUNT_PID/status")")
  stop_mount
done

log "a 1 MiB read in the middle of a fresh mount"
start_mount "$SCRATCH/middle.log"
python3 - "$SCRATCH/mnt/snapshots/latest/dump.bin" "$SIZE_MIB" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
assert len(os.pread(fd, 1 << 20, (int(sys.argv[2]) << 20) // 2)) == 1 << 20
PY
stop_mount
middle=$(grep -i -E "request|download|byte" "$SCRATCH/middle.log" | tr '\n' ' ' | sed 's/  */ /g')

# restic and borg: the same stream read with dd through their mounts; their mount process's
# peak RSS (VmHWM) and the read's seconds.
other_lines=()
peak_of() { awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$1/status"; }
wait_mounted() { for _ in $(seq 1 600); do mounted && return 0; sleep 0.1; done; echo "mount.sh: $1 did not mount" >&2; exit 1; }
if [ "$OTHERS" = 1 ]; then
  log "restic: backup and mount"
  export RESTIC_REPOSITORY=$SCRATCH/restic RESTIC_PASSWORD=mount-bench
  restic init -q
  restic backup -q --stdin --stdin-filename dump.bin <"$STREAM"
  restic mount "$SCRATCH/mnt" >/dev/null 2>&1 &
  other_pid=$!
  wait_mounted restic
  file=$(find "$SCRATCH/mnt/snapshots/latest/" -name dump.bin | head -1)
  other_seconds=$(seconds dd if="$file" of=/dev/null bs=1M)
  other_lines+=("| \`restic mount\` ($(restic version | cut -d' ' -f2)) | $(peak_of "$other_pid") | $other_seconds | $(rate "$other_seconds") |")
  "$FUSERMOUNT" -u "$SCRATCH/mnt"; wait "$other_pid" || true
  log "borg: create and mount"
  export BORG_REPO=$SCRATCH/borg BORG_PASSPHRASE=mount-bench
  borg init -e repokey-blake2 >/dev/null 2>&1
  borg create --stdin-name dump.bin ::night - <"$STREAM"
  borg mount -f :: "$SCRATCH/mnt" >/dev/null 2>&1 &
  other_pid=$!
  wait_mounted borg
  other_seconds=$(seconds dd if="$SCRATCH/mnt/night/dump.bin" of=/dev/null bs=1M)
  other_lines+=("| \`borg mount\` ($(borg --version | cut -d' ' -f2)) | $(peak_of "$other_pid") | $other_seconds | $(rate "$other_seconds") |")
  "$FUSERMOUNT" -u "$SCRATCH/mnt"; wait "$other_pid" || true
fi

DUMP=$(best "${dump_times[@]}") MOUNT=$(best "${mount_times[@]}")
PEAK=$(printf '%s\n' "${peaks[@]}" | sort -n | tail -1)
{
  echo "# Reading through \`cairn mount\`"
  echo
  echo "\`benches/mount.sh --size-mib $SIZE_MIB\`, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(uname -r), local repository on $(df -T "$SCRATCH" | awk 'NR == 2 {print $2}'), release build, \`$("$CAIRN" --version)\`. Best of two."
  echo
  echo "| read of a $SIZE_MIB MiB stream | seconds | MiB/s |"
  echo "| --- | ---: | ---: |"
  echo "| \`cairn dump latest dump.bin > /dev/null\` | $DUMP | $(rate "$DUMP") |"
  echo "| \`dd bs=1M\` through \`cairn mount\` | $MOUNT | $(rate "$MOUNT") |"
  echo
  echo "Peak RSS of the mount process while reading: $((PEAK / 1024)) MiB (VmHWM, the larger of the two runs)."
  echo
  if [ ${#other_lines[@]} -gt 0 ]; then
    echo "| \`dd bs=1M\` of the stream through | peak RSS of the mount process (MiB) | seconds | MiB/s |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| \`cairn mount\` | $((PEAK / 1024)) | $MOUNT | $(rate "$MOUNT") |"
    printf '%s\n' "${other_lines[@]}"
    echo
  fi
  echo "A 1 MiB read in the middle of the stream, on a fresh mount whose local cache holds the index and the trees but no data (\`cairn -v mount\`'s report): $middle"
} >"$OUT"
cat "$OUT"
[ "$KEEP" = 1 ] || rm -rf "$SCRATCH"
