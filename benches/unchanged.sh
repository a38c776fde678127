#!/usr/bin/env bash
# The nightly unchanged re-backup, alone: each tool backs a corpus up once (untimed), then backs it
# up again unchanged REPS times, the tools alternating in each repetition, so the ratios between
# tools come from runs made back to back. Locally, or (--s3-latency 10ms) on moto through benches'
# latency_proxy, which adds the delay each way and logs every request: the requests of each run
# are counted there, the same place for every tool.
#
#   benches/unchanged.sh [--corpus DIR] [--scratch DIR] [--reps N] [--s3-latency 10ms]
#                        [--tools cairn=BIN,cairn-main=BIN,restic,rustic]
#
# A tool named cairn* runs the binary given after `=` (several cairn builds can be compared).
# restic is taken from PATH, rustic from .cache/rustic/bin/rustic or PATH. Prints one line per
# run (tool, rep, seconds, requests) and a summary: best of the reps and the ratios to cairn.
# Passwords come from CAIRN_PASSWORD, RESTIC_PASSWORD (both default to a bench password).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=/work/bench-scratch/corpus/night1
SCRATCH=${TMPDIR:-/tmp}/cairn-unchanged
REPS=2
LATENCY=
TOOLS="cairn=$ROOT/target/release/cairn,restic,rustic"
while [ $# -gt 0 ]; do
  case $1 in
    --corpus) CORPUS=${2:?}; shift 2 ;;
    --scratch) SCRATCH=${2:?}; shift 2 ;;
    --reps) REPS=${2:?}; shift 2 ;;
    --s3-latency) LATENCY=${2:?}; shift 2 ;;
    --tools) TOOLS=${2:?}; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export CAIRN_PASSWORD=${CAIRN_PASSWORD:-bench} RESTIC_PASSWORD=${RESTIC_PASSWORD:-bench}
RUSTIC=$ROOT/.cache/rustic/bin/rustic
[ -x "$RUSTIC" ] || RUSTIC=/work/main/.cache/rustic/bin/rustic
[ -x "$RUSTIC" ] || RUSTIC=$(command -v rustic || true)

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
LOG=$SCRATCH/requests.log
: >"$LOG"
PROXY_PID=
if [ -n "$LATENCY" ]; then
  # shellcheck source=../tests/servers.sh
  source "$ROOT/tests/servers.sh"
  trap '[ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null; stop_test_servers' EXIT
  start_test_servers
  "$ROOT/target/release/latency_proxy" --upstream "${CAIRN_TEST_S3_ENDPOINT#http://}" \
    --delay-ms "${LATENCY%ms}" --request-log "$LOG" >"$SCRATCH/proxy.addr" &
  PROXY_PID=$!
  for _ in $(seq 50); do [ -s "$SCRATCH/proxy.addr" ] && break; sleep 0.1; done
  ENDPOINT=http://$(cat "$SCRATCH/proxy.addr")
  export AWS_ENDPOINT=$ENDPOINT
fi

# Sets CMD to the command line of TOOL (name[=binary]) doing STEP (init, backup).
tool_cmd() {
  local tool=${1%%=*} bin=${1#*=} step=$2 key
  key=$SCRATCH/$tool
  case $tool in
    cairn*)
      local repo=$key/repo
      [ -n "$LATENCY" ] && repo=s3://cairn-test/unchanged-$tool-$$
      case $step in
        init) CMD=("$bin" -r "$repo" --cache-dir "$key/cache" init -q) ;;
        backup) CMD=("$bin" -r "$repo" --cache-dir "$key/cache" -q backup "$CORPUS") ;;
      esac ;;
    restic)
      local repo=$key/repo
      [ -n "$LATENCY" ] && repo=s3:$ENDPOINT/cairn-test/unchanged-restic-$$
      case $step in
        init) CMD=(restic -r "$repo" --cache-dir "$key/cache" init -q) ;;
        backup) CMD=(restic -r "$repo" --cache-dir "$key/cache" -q backup "$CORPUS") ;;
      esac ;;
    rustic)
      local repo=$key/repo
      local -a env=()
      if [ -n "$LATENCY" ]; then
        repo=opendal:s3
        env=(env "RUSTIC_REPO_OPT_ENDPOINT=$ENDPOINT" RUSTIC_REPO_OPT_BUCKET=cairn-test
          RUSTIC_REPO_OPT_REGION=us-east-1 "RUSTIC_REPO_OPT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
          "RUSTIC_REPO_OPT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
          RUSTIC_REPO_OPT_ENABLE_VIRTUAL_HOST_STYLE=false "RUSTIC_REPO_OPT_ROOT=/unchanged-rustic-$$")
      fi
      case $step in
        init) CMD=("${env[@]}" "$RUSTIC" -r "$repo" --password "$RESTIC_PASSWORD" --cache-dir "$key/cache" init) ;;
        backup) CMD=("${env[@]}" "$RUSTIC" -r "$repo" --password "$RESTIC_PASSWORD" --cache-dir "$key/cache" backup "$CORPUS") ;;
      esac ;;
  esac
}

IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
for tool in "${TOOL_LIST[@]}"; do
  mkdir -p "$SCRATCH/${tool%%=*}"
  tool_cmd "$tool" init; "${CMD[@]}" >/dev/null 2>&1
  tool_cmd "$tool" backup; "${CMD[@]}" >/dev/null 2>&1
done

RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for rep in $(seq "$REPS"); do
  order=("${TOOL_LIST[@]}")
  # Alternate the order: a tool never always runs right after the same other one.
  if [ $((rep % 2)) = 0 ]; then
    order=()
    for ((i = ${#TOOL_LIST[@]} - 1; i >= 0; i--)); do order+=("${TOOL_LIST[$i]}"); done
  fi
  for tool in "${order[@]}"; do
    tool_cmd "$tool" backup
    before=$(wc -l <"$LOG")
    /usr/bin/time -f '%e' -o "$SCRATCH/time.out" "${CMD[@]}" >/dev/null 2>&1
    sleep 0.2
    requests=$(($(wc -l <"$LOG") - before))
    printf '%s\t%s\t%s\t%s\n' "${tool%%=*}" "$rep" "$(cat "$SCRATCH/time.out")" "$requests" | tee -a "$RESULTS"
  done
done
python3 - "$RESULTS" <<'PY'
import collections, sys
best = collections.defaultdict(lambda: (float("inf"), 0))
for line in open(sys.argv[1]):
    tool, rep, secs, requests = line.split("\t")
    best[tool] = min(best[tool], (float(secs), int(requests)))
base = best.get("cairn", (None,))[0]
print("| tool | best of reps (s) | requests | tool / cairn |")
print("| --- | ---: | ---: | ---: |")
for tool, (secs, requests) in best.items():
    ratio = f"{secs / base:.2f}" if base else "-"
    print(f"| {tool} | {secs:.2f} | {requests} | {ratio} |")
PY
