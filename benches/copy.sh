#!/usr/bin/env bash
# `cairn copy` against `restic copy`, in the same run: two local repositories, night 1 of the
# generated corpus backed up into the source and copied, then night 2 backed up and copied again.
#
#   benches/copy.sh [--size-gib N] [--reps N] [--seed N] [--scratch DIR] [--tools cairn,restic]
#                   [--out FILE] [--keep]
#
# Each destination is made to chunk like its source (cairn: `init --copy-chunker-params-from`;
# restic: `init --copy-chunker-params --from-repo`), so neither re-chunks. Measured per tool and
# repetition: wall seconds and peak RSS of the first and the second copy, and the bytes the
# destination grew by on the second copy (what a second copy sends). Appends a dated section to
# benches/results/copy.md (earlier sections stay). CAIRN_BIN=path measures that cairn binary.
set -euo pipefail

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCHES/.." && pwd)
BENCH_NAME=copy
# shellcheck source=lib.sh
source "$BENCHES/lib.sh"

SIZE_GIB=0.25
REPS=1
SEED=42
SCRATCH=${TMPDIR:-/tmp}/cairn-copy
TOOLS=cairn,restic
OUT=$BENCHES/results/copy.md
KEEP=0
while [ $# -gt 0 ]; do
  common_option "$@"
  if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
  echo "copy.sh: unknown option $1" >&2
  exit 2
done
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"

RUN=$SCRATCH/run
CORPUS=$SCRATCH/corpus
LIVE=$SCRATCH/live
META=$RUN/meta.tsv
RESULTS=$RUN/results.tsv # tool rep copy1_s copy2_s copy2_bytes copy1_rss_kib copy2_rss_kib
mkdir -p "$SCRATCH"
rm -rf "$RUN"
mkdir -p "$RUN/logs"
: >"$META"
: >"$RESULTS"

build_cairn_and_generator
install_peers "${TOOL_LIST[@]}"
generate_corpus 1,2
record_machine "${TOOL_LIST[@]}"
meta n1_bytes "$(tree_bytes "$CORPUS/night1")"
meta n2_bytes "$(tree_bytes "$CORPUS/night2")"

repo_bytes() { du -sb "$1" | cut -f1; }

run_tool() {
  local tool=$1 rep=$2 base=$RUN/$1-$2
  local src=$base/src dst=$base/dst cache=$base/cache
  rm -rf "$base" "$LIVE"
  mkdir -p "$base"
  local cairn=(env CAIRN_CACHE_DIR="$cache" "$CAIRN") restic=(restic --cache-dir "$cache")
  case $tool in
    cairn)
      "${cairn[@]}" -r "$src" init -q
      CAIRN_FROM_PASSWORD=$CAIRN_PASSWORD "${cairn[@]}" -r "$dst" init -q --copy-chunker-params-from "$src"
      ;;
    restic)
      "${restic[@]}" -r "$src" init --repository-version 2 >/dev/null
      RESTIC_FROM_PASSWORD=$RESTIC_PASSWORD "${restic[@]}" -r "$dst" init --repository-version 2 \
        --copy-chunker-params --from-repo "$src" >/dev/null
      ;;
  esac
  local night copy1 copy2 rss1 rss2 before
  for night in 1 2; do
    sync_tree "$CORPUS/night$night" "$LIVE"
    case $tool in
      cairn) "${cairn[@]}" -r "$src" backup -q "$LIVE" ;;
      restic) "${restic[@]}" -r "$src" backup -q --compression auto "$LIVE" ;;
    esac
    before=$(repo_bytes "$dst")
    case $tool in
      cairn) timed "$RUN/logs/$tool-$rep-copy$night.log" env CAIRN_FROM_PASSWORD="$CAIRN_PASSWORD" \
        "${cairn[@]}" -r "$dst" copy --from-repo "$src" ;;
      restic) timed "$RUN/logs/$tool-$rep-copy$night.log" env RESTIC_FROM_PASSWORD="$RESTIC_PASSWORD" \
        "${restic[@]}" -r "$dst" copy --from-repo "$src" ;;
    esac
    if [ "$night" = 1 ]; then copy1=$SECS rss1=$RSS_KIB; else copy2=$SECS rss2=$RSS_KIB; fi
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$rep" "$copy1" "$copy2" \
    "$(($(repo_bytes "$dst") - before))" "$rss1" "$rss2" >>"$RESULTS"
  log "$tool rep $rep: copy night 1 ${copy1}s ${rss1} KiB, night 2 ${copy2}s ${rss2} KiB"
}

run_repetitions

python3 - "$RESULTS" "$META" "$OUT" "$CAIRN" <<'PY'
import os, sys, statistics
results, meta, out, cairn = sys.argv[1:]
rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]
info = dict(line.rstrip("\n").split("\t", 1) for line in open(meta) if "\t" in line)
tools = []
for row in rows:
    if row[0] not in tools:
        tools.append(row[0])
def values(tool, column):
    return [float(row[column]) for row in rows if row[0] == tool]
def mean(tool, column):
    return statistics.mean(values(tool, column))
def each(tool, column, scale=1.0, digits=2):
    return " / ".join(f"{value / scale:.{digits}f}" for value in values(tool, column))
MB, KIB = 1e6, 1024
lines = [f"## {info.get('date', '')}: cairn copy vs restic copy", "",
         f"Corpus: `gen_corpus --seed {info.get('seed', '42')}` night 1 {int(info['n1_bytes']) / MB:.1f} MB, "
         f"night 2 {int(info['n2_bytes']) / MB:.1f} MB; two local repositories, the destination "
         "chunking like the source; each repetition's value, `rep 1 / rep 2 ...` (tools alternate "
         f"order); cairn binary `{cairn}`. Written by `benches/copy.sh`.", "",
         "| tool | copy night 1 (s) | copy night 2 (s) | peak RSS night 1 (MiB) | peak RSS night 2 (MiB) | bytes sent by the second copy |",
         "|---|---|---|---|---|---|"]
for tool in tools:
    lines.append(f"| {tool} | {each(tool, 2)} | {each(tool, 3)} | {each(tool, 5, KIB, 0)} | "
                 f"{each(tool, 6, KIB, 0)} | {mean(tool, 4):,.0f} |")
if "cairn" in tools and "restic" in tools:
    lines += ["", f"cairn / restic (means): time night 1 {mean('cairn', 2) / mean('restic', 2):.2f}, "
              f"night 2 {mean('cairn', 3) / mean('restic', 3):.2f}; peak RSS night 1 "
              f"{mean('cairn', 5) / mean('restic', 5):.2f}, night 2 {mean('cairn', 6) / mean('restic', 6):.2f}."]
lines += ["", "Machine: " + "; ".join(f"{key} {info[key]}" for key in
          ["date", "cpu", "memory", "kernel", "cairn_version", "restic_version", "load_start", "load_end"]
          if key in info) + "."]
section = "\n".join(lines) + "\n"
if not os.path.exists(out) or not open(out).read().strip():
    open(out, "w").write("# cairn copy vs restic copy\n\n" + section)
else:
    open(out, "a").write("\n" + section)
print(section)
PY
[ "$KEEP" = 1 ] || rm -rf "$RUN"/cairn-* "$RUN"/restic-* "$LIVE"
