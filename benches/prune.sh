#!/usr/bin/env bash
# Prune benchmark (issue 5): forget + prune of a repository holding 30 nightly snapshots of the
# generated corpus, cairn beside restic and borg on the same history.
#
#   benches/prune.sh [--size-gib N] [--nights N] [--keep-daily N] [--rss-night N] [--reps N]
#                    [--seed N] [--scratch DIR] [--tools cairn,restic,borg] [--out FILE] [--keep]
#
# Builds cairn (release, CARGO_TARGET_DIR, default /tmp/bench-target), installs restic and borgbackup
# from the distribution if missing, and generates nights 1..N (default 30) of the corpus with benches'
# gen_corpus (default 0.25 GiB a night; night N is night N-1 with one night's changes). A "live"
# directory is updated in place night by night (only files whose size or mtime differ are rewritten)
# and every night is backed up by each tool, stamped with its own day (2026-01-01T02:00:00Z plus N-1
# days, TZ=UTC) so that daily retention has something to remove. The backups are untimed setup
# (their total time is reported). Then, for every tool in the same run and with repetitions in
# alternating tool order, each on a fresh copy of the history (repository and cache, copied
# untimed), it measures wall time and peak RSS (/usr/bin/time -f '%e %M') of:
#   cairn   `forget --keep-daily 7 --prune`; on another copy `forget` and `prune` as two commands;
#           and `forget --keep-daily 7 --prune` on a copy taken after night --rss-night (default 10),
#           to show whether cairn's peak RSS grows with the repository;
#   restic  `forget --keep-daily 7 --prune`;
#   borg    `prune --keep-daily 7`, then `compact` (each, and their sum);
# with the repository size (du -sb) before and after. Afterwards (untimed) it counts the snapshots
# left and checks every repository: cairn check --read-data, restic check --read-data, borg check
# --verify-data. Writes benches/results/prune.md; raw data stays in SCRATCH/run.
#
# Settings: as benches/e2e.sh (cairn defaults, prune --max-unused 10%; restic repository v2,
# --compression auto, prune --max-unused 5%; borg 1.2 --encryption repokey-blake2 --compression
# zstd,3, compact --threshold 10). The corpus (about N x size: 7.3 GB by default; regenerated in
# about 30 s), the repositories and their copies are deleted at the end unless --keep (a kept
# corpus is reused by the next run with the same settings).
set -euo pipefail

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCHES/.." && pwd)
BENCH_NAME=prune
# shellcheck source=lib.sh
source "$BENCHES/lib.sh"
export TZ=UTC

SIZE_GIB=0.25
NIGHTS=30
KEEP_DAILY=7
RSS_NIGHT=10
REPS=1
SEED=42
SCRATCH=${TMPDIR:-/tmp}/cairn-prune
TOOLS=cairn,restic,borg
OUT=$BENCHES/results/prune.md
KEEP=0
while [ $# -gt 0 ]; do
  common_option "$@"
  if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
  case $1 in
    --nights) NIGHTS=$2; shift 2 ;;
    --keep-daily) KEEP_DAILY=$2; shift 2 ;;
    --rss-night) RSS_NIGHT=$2; shift 2 ;;
    *) echo "prune.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
[ "$RSS_NIGHT" -lt "$NIGHTS" ] || die "--rss-night must come before the last night"

RUN=$SCRATCH/run
CORPUS=$SCRATCH/corpus
LIVE=$SCRATCH/live
HISTORY=$SCRATCH/history   # <name>/{repo,cache}: the backed-up history, never pruned
WORK=$SCRATCH/work         # <rep>/<name>-<step>/{repo,cache}: the copies that are pruned
mkdir -p "$SCRATCH"
rm -rf "$RUN" "$LIVE" "$HISTORY" "$WORK"
mkdir -p "$RUN/logs"
TIMES=$RUN/times.tsv       # name rep step seconds rss_kib
SIZES=$RUN/sizes.tsv       # name rep when repository_bytes snapshots
BACKUPS=$RUN/backups.tsv   # tool night seconds rss_kib repository_bytes
CMDS=$RUN/commands.tsv     # name step command (first repetition)
META=$RUN/meta.tsv         # key value
: >"$TIMES"; : >"$SIZES"; : >"$BACKUPS"; : >"$CMDS"; : >"$META"

build_cairn_and_generator
install_peers "${TOOL_LIST[@]}"

# ----------------------------------------------------------------------------------- corpus
generate_corpus "$(seq -s, 1 "$NIGHTS")"
meta first_bytes "$(tree_bytes "$CORPUS/night1")"
meta first_files "$(find "$CORPUS/night1" -type f | wc -l)"
meta last_bytes "$(tree_bytes "$CORPUS/night$NIGHTS")"

meta size_gib "$SIZE_GIB"
meta seed "$SEED"
meta nights "$NIGHTS"
meta keep_daily "$KEEP_DAILY"
meta rss_night "$RSS_NIGHT"
meta reps "$REPS"
meta tools "$TOOLS"
record_machine "${TOOL_LIST[@]}"

# The words of a command, quoted for a shell where they need it.
quoted() { local line; printf -v line '%q ' "$@"; echo "${line% }"; }

# Points REPO and CACHE at the state directory $1.
use_state() { REPO=$1/repo; CACHE=$1/cache; }

# Snapshots left in the repository of the current state, as the tool lists them.
snapshot_count() {
  tool_cmd "$1" snapshots
  "${CMD[@]}" 2>>"$RUN/logs/snapshots.err" | python3 -c '
import json, sys
text = sys.stdin.read().strip()
try:
    value = json.loads(text) if text else []
except ValueError:  # one object per line
    value = [json.loads(line) for line in text.splitlines()]
print(len(value["archives"] if isinstance(value, dict) else value))'
}

# ---------------------------------------------------------------------------- history (setup)
# Nothing is deleted from here to the end of the measurements: on a filesystem mounted with
# `discard`, freeing gigabytes slows the following file operations down by an order of magnitude.
sync
for tool in "${TOOL_LIST[@]}"; do
  use_state "$HISTORY/$tool"
  mkdir -p "$CACHE"
  tool_cmd "$tool" init
  "${CMD[@]}" >"$RUN/logs/$tool-init.log" 2>&1 || die "$tool init failed: $RUN/logs/$tool-init.log"
done
setup_start=$(date +%s)
for night in $(seq 1 "$NIGHTS"); do
  sync_tree "$CORPUS/night$night" "$LIVE"
  STAMP=$(date -u -d "2026-01-01T02:00:00Z + $((night - 1)) days" +%Y-%m-%dT%H:%M:%SZ)
  line="night $night ($STAMP):"
  for tool in "${TOOL_LIST[@]}"; do
    use_state "$HISTORY/$tool"
    tool_cmd "$tool" "backup-night$night"
    [ "$night" = 1 ] && printf '%s\t%s\t%s\n' "$tool" backup "$(quoted "${CMD[@]}")" >>"$CMDS"
    timed "$RUN/logs/$tool-backup-night$night.log" "${CMD[@]}"
    printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$night" "$SECS" "$RSS_KIB" "$(du -sb "$REPO" | cut -f1)" >>"$BACKUPS"
    line+=" $tool ${SECS}s"
  done
  log "$line"
  if [ "$night" = "$RSS_NIGHT" ] && [ -d "$HISTORY/cairn" ]; then
    cp -a "$HISTORY/cairn" "$HISTORY/cairn-night$RSS_NIGHT"
  fi
done
unset STAMP
meta setup_seconds "$(($(date +%s) - setup_start))"

# ------------------------------------------------------------------------------- measurements
# Copies the history $1 to a fresh state for repetition $2 and step $3, points REPO and CACHE at
# it and records its size and snapshot count under NAME.
fresh_copy() {
  local history=$1 rep=$2 name=$3 tool=$4
  local state=$WORK/$rep/$name
  mkdir -p "$WORK/$rep"
  cp -a "$history" "$state"
  use_state "$state"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rep" before "$(du -sb "$REPO" | cut -f1)" "$(snapshot_count "$tool")" >>"$SIZES"
}

# Runs STEP of TOOL on the current state, recording it under NAME.
measure() {
  local name=$1 tool=$2 rep=$3 step=$4
  tool_cmd "$tool" "$step"
  [ "$rep" = 1 ] && printf '%s\t%s\t%s\n' "$name" "$step" "$(quoted "${CMD[@]}")" >>"$CMDS"
  timed "$RUN/logs/$name-$rep-$step.log" "${CMD[@]}"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rep" "$step" "$SECS" "$RSS_KIB" >>"$TIMES"
  log "$name rep $rep $step: ${SECS}s, peak RSS $((RSS_KIB / 1024)) MiB"
}

# Records the size and snapshot count of the current state under NAME, after the measurements.
record_after() {
  local name=$1 rep=$2 tool=$3
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rep" after "$(du -sb "$REPO" | cut -f1)" "$(snapshot_count "$tool")" >>"$SIZES"
}

run_tool() {
  local tool=$1 rep=$2
  case $tool in
    cairn)
      fresh_copy "$HISTORY/cairn" "$rep" cairn cairn
      measure cairn cairn "$rep" forget-prune
      record_after cairn "$rep" cairn
      fresh_copy "$HISTORY/cairn" "$rep" cairn-split cairn
      measure cairn-split cairn "$rep" forget
      measure cairn-split cairn "$rep" prune
      record_after cairn-split "$rep" cairn
      fresh_copy "$HISTORY/cairn-night$RSS_NIGHT" "$rep" cairn-night$RSS_NIGHT cairn
      measure cairn-night$RSS_NIGHT cairn "$rep" forget-prune
      record_after cairn-night$RSS_NIGHT "$rep" cairn
      ;;
    restic)
      fresh_copy "$HISTORY/restic" "$rep" restic restic
      measure restic restic "$rep" forget-prune
      record_after restic "$rep" restic
      ;;
    borg)
      fresh_copy "$HISTORY/borg" "$rep" borg borg
      measure borg borg "$rep" prune
      measure borg borg "$rep" compact
      record_after borg "$rep" borg
      ;;
  esac
}

run_repetitions

# ------------------------------------------------------------------------ checks (untimed)
CHECKS=$RUN/checks.tsv     # name rep result
: >"$CHECKS"
for state in "$WORK"/*/*; do
  name=$(basename "$state")
  rep=$(basename "$(dirname "$state")")
  tool=${name%%-*}
  use_state "$state"
  tool_cmd "$tool" check
  log "checking $name (repetition $rep)"
  if "${CMD[@]}" >"$RUN/logs/$name-$rep-check.log" 2>&1; then
    printf '%s\t%s\tok\n' "$name" "$rep" >>"$CHECKS"
  else
    printf '%s\t%s\tFAILED (exit %s)\n' "$name" "$rep" "$?" >>"$CHECKS"
    tail -n 20 "$RUN/logs/$name-$rep-check.log" >&2
  fi
done
# cairn's own account of what prune did (last JSON line of type prune).
for f in "$RUN"/logs/cairn*-1-*prune.log; do
  printf '%s\t%s\n' "$(basename "$f" .log)" "$(grep -h '"message_type":"prune"' "$f" | tail -1)" >>"$RUN/cairn-prune.tsv"
done

# ------------------------------------------------------------------------------------ report
mkdir -p "$(dirname "$OUT")"
python3 "$BENCHES/prune_report.py" "$RUN" "$OUT"
if [ "$KEEP" = 0 ]; then rm -rf "$LIVE" "$HISTORY" "$WORK" "$CORPUS"; fi
log "done; raw data in $RUN"
grep -q FAILED "$CHECKS" && die "a repository check failed after pruning (see $CHECKS)"
exit 0
