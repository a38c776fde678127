# `benches/memory.sh --commands`: peak RSS and wall time of every command, cairn beside restic and
# borg (see memory.sh's header). Sourced by memory.sh after its options are read, never run.
# shellcheck shell=bash

IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
RUN=$SCRATCH/run
META=$RUN/meta.tsv
CORPUS=$SCRATCH/corpus
LIVE=$SCRATCH/live
TIMES=$RUN/times.tsv # tool rep step secs rss_kib
KEEP_DAILY=1
mkdir -p "$SCRATCH"
rm -rf "$RUN"
mkdir -p "$RUN/logs"
: >"$META"
: >"$TIMES"

build_cairn_and_generator
install_peers "${TOOL_LIST[@]}"
generate_corpus 1,2
record_machine "${TOOL_LIST[@]}"
meta size_gib "$SIZE_GIB"
meta seed "$SEED"
meta reps "$REPS"

# Runs STEP of TOOL under /usr/bin/time and records its wall time and peak RSS.
measure_step() {
  local tool=$1 rep=$2 step=$3 as=${4:-$3}
  tool_cmd "$tool" "$as"
  timed "$RUN/logs/$tool-$rep-$step.log" "${CMD[@]}"
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$rep" "$step" "$SECS" "$RSS_KIB" >>"$TIMES"
  log "$tool rep $rep $step: ${SECS}s, peak RSS $((RSS_KIB / 1024)) MiB"
}

run_tool() {
  local tool=$1 rep=$2 base=$SCRATCH/$1-$2
  REPO=$base/repo DST=$base/copy CACHE=$base/cache TARGET=$base/restore ARCHIVE=backup2
  rm -rf "$base" "$LIVE"
  mkdir -p "$CACHE" "$CACHE-dst" "$TARGET"
  sync_tree "$CORPUS/night1" "$LIVE"
  measure_step "$tool" "$rep" init
  measure_step "$tool" "$rep" backup1
  measure_step "$tool" "$rep" backup1-again
  sync_tree "$CORPUS/night2" "$LIVE"
  measure_step "$tool" "$rep" backup2
  measure_step "$tool" "$rep" restore
  diff -r "$CORPUS/night2" "$TARGET$LIVE" >"$RUN/logs/$tool-$rep-restore.diff" ||
    die "$tool: the restored night 2 differs from the corpus (see $RUN/logs/$tool-$rep-restore.diff)"
  rm -rf "$TARGET"
  measure_step "$tool" "$rep" check
  if [ "$tool" != borg ]; then
    tool_cmd "$tool" copy-init
    "${CMD[@]}" >"$RUN/logs/$tool-$rep-copy-init.log" 2>&1
    measure_step "$tool" "$rep" copy
  fi
  if [ "$tool" = borg ]; then
    measure_step "$tool" "$rep" forget prune
    measure_step "$tool" "$rep" prune compact
  else
    measure_step "$tool" "$rep" forget
    measure_step "$tool" "$rep" prune
  fi
  [ "$KEEP" = 1 ] || rm -rf "$base"
}

run_repetitions

python3 - "$TIMES" "$META" "$OUT" <<'PY'
import collections, sys
times_path, meta_path, out = sys.argv[1:]
meta = dict(line.rstrip("\n").split("\t", 1) for line in open(meta_path) if "\t" in line)
runs = collections.defaultdict(list)  # (tool, step) -> [(rep, secs, rss_kib)]
tools = []
for line in open(times_path):
    tool, rep, step, secs, rss = line.rstrip("\n").split("\t")
    runs[tool, step].append((int(rep), float(secs), int(rss)))
    if tool not in tools:
        tools.append(tool)
steps = ["init", "backup1", "backup1-again", "backup2", "restore", "check", "copy", "forget", "prune"]
labels = {"backup1": "backup night 1", "backup1-again": "unchanged re-backup", "backup2": "backup night 2",
          "check": "check --read-data", "copy": "copy (all snapshots)", "forget": "forget (borg prune)",
          "prune": "prune (borg compact)"}
def cell(tool, step, pick):
    xs = [pick(r) for r in sorted(runs[tool, step])]
    return "–" if not xs else " / ".join(xs)
lines = ["# Peak RSS per command: " + " vs ".join(tools), "",
         f"`benches/memory.sh --commands --size-gib {meta['size_gib']} --seed {meta['seed']} --reps {meta['reps']}`, "
         f"{meta['date']}, {meta['cpu']}, {meta['memory']}, {meta['cairn_version']}; "
         + ", ".join(meta[k] for k in ("restic_version", "borg_version") if k in meta) + ".",
         f"Load average {meta['load_start']} at the start, {meta['load_end']} at the end. "
         "Each cell: one value per repetition. Peak RSS is /usr/bin/time's maximum resident set size.", "",
         "| step | " + " | ".join(f"{t} peak RSS MiB" for t in tools) + " | "
         + " | ".join(f"{t} s" for t in tools) + " |",
         "|---|" + "---|" * (2 * len(tools))]
for step in steps:
    if not any(runs[t, step] for t in tools):
        continue
    rss = [cell(t, step, lambda r: f"{r[2] / 1024:.0f}") for t in tools]
    secs = [cell(t, step, lambda r: f"{r[1]:.2f}") for t in tools]
    lines.append(f"| {labels.get(step, step)} | " + " | ".join(rss) + " | " + " | ".join(secs) + " |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
[ "$KEEP" = 1 ] || rm -rf "$CORPUS" "$LIVE"
