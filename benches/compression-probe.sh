#!/usr/bin/env bash
# Initial backup of one corpus night under several global option sets, REPS times with the order
# of the settings rotating, fresh repository and cache per run; prints one TSV line per run:
# label, rep, wall s, user s, sys s, peak RSS KiB, repository bytes, and the pipeline_stats JSON
# (CAIRN_PIPELINE_STATS=1). benches/results/compression-probe.md and scaling.md come from it.
#
#   benches/compression-probe.sh CAIRN SOURCE SCRATCH REPS 'label:--opt val' ['label:--opt' ...]
#
# CAIRN is a built cairn (the profiling profile: release code with symbols), SOURCE the directory
# to back up (gen_corpus's night1), SCRATCH a directory for repositories (emptied per run).
set -euo pipefail

cairn=${1:?cairn binary}
source_dir=${2:?source directory}
scratch=${3:?scratch directory}
reps=${4:?repetitions}
shift 4
settings=("$@")
export CAIRN_PASSWORD=probe-bench CAIRN_PIPELINE_STATS=1

run_one() {
  local label=$1 options=$2 rep=$3
  local repo=$scratch/repo cache=$scratch/cache
  rm -rf "$repo" "$cache"
  "$cairn" -r "$repo" --cache-dir "$cache" -q init --kdf-memory-mib 8 >/dev/null
  sync
  local timing=$scratch/time.txt stats=$scratch/stats.txt
  # shellcheck disable=SC2086 # options are words on purpose
  /usr/bin/time -f '%e %U %S %M' -o "$timing" \
    "$cairn" -r "$repo" --cache-dir "$cache" --json $options backup "$source_dir" \
    | grep '"pipeline_stats"' >"$stats"
  local stored
  stored=$(du -sb "$repo" | cut -f1)
  read -r wall user sys rss <"$timing"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rep" "$wall" "$user" "$sys" "$rss" \
    "$stored" "$(cat "$stats")"
}

count=${#settings[@]}
for rep in $(seq 1 "$reps"); do
  for offset in $(seq 0 $((count - 1))); do
    # Rotate the order each repetition so that no setting always runs first (cold caches).
    index=$(((offset + rep - 1) % count))
    setting=${settings[$index]}
    run_one "${setting%%:*}" "${setting#*:}" "$rep"
  done
done
