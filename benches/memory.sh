#!/usr/bin/env bash
# Memory benchmarks. Two modes:
#
#   benches/memory.sh [--chunks 100000,1000000,2000000] [--size-gib N] [--seed N] [--scratch DIR]
#                     [--out FILE] [--keep]
#   benches/memory.sh --commands [--size-gib N] [--reps N] [--seed N] [--tools cairn,restic,borg]
#                     [--scratch DIR] [--out FILE] [--keep]
#
# --commands (issue 17, peak RSS of every command against restic and borg): for every tool and
# repetition (tool order alternating), on a fresh repository and cache, wall time and peak RSS of
#   init; backup of night 1 (backup1), the same again (backup1-again), night 2 (backup2); restore
#   of the latest snapshot; check --read-data (borg: check --verify-data); copy of every snapshot
#   into a second local repository made to chunk like the first (cairn and restic; borg 1.2 has no
#   copy; the destination's init is untimed); forget --keep-daily 1 (borg: prune --keep-daily 1),
#   which leaves night 2; prune (borg: compact).
# Settings as benches/e2e.sh. Writes benches/results/memory-commands.md (default --size-gib 0.25,
# --seed 7, --reps 2). CAIRN_BIN=path measures that cairn binary instead of building one.
#
# Default mode (issue 4, memory against repository size): peak RSS of cairn on repositories that
# already hold 100k, 1M and 2M chunks, while a backup adds about 1 GB of new data.
#
# For every chunk count N, on a fresh repository (default Argon2id key: 64 MiB, which every
# command that opens the repository holds briefly, so it is part of every peak below):
#   1. benches' synth_repo adds N small real blobs (real packs and index objects, index objects
#      of 32,768 entries as a backup with 8 KiB chunks and 16 MiB packs writes them), untimed;
#   2. `cairn index rebuild` with an empty cache dir: reads every index object into the redb
#      cache (the cold start of a new machine or a lost cache) — wall time, peak RSS, cache size;
#   3. `cairn backup` of night 1 of the generated corpus (--size-gib, default 1: ~1 GB of new
#      data) with that cache — wall time, peak RSS;
#   4. `cairn backup --no-cache` of the same data again after `--force`-free dedup: it must
#      rebuild the index in a temporary file first — wall time, peak RSS.
# Writes benches/results/memory.md. Peak RSS is /usr/bin/time's maximum resident set size.
set -euo pipefail

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCHES/.." && pwd)
BENCH_NAME=memory
# shellcheck source=lib.sh
source "$BENCHES/lib.sh"

COMMANDS=0
[ "${1:-}" = --commands ] && { COMMANDS=1; shift; }
CHUNKS=100000,1000000,2000000
SIZE_GIB=1
SEED=42
REPS=1
SCRATCH=${TMPDIR:-/tmp}/cairn-memory
OUT=$BENCHES/results/memory.md
TOOLS=cairn,restic,borg
if [ "$COMMANDS" = 1 ]; then
  SIZE_GIB=0.25 SEED=7 REPS=2 OUT=$BENCHES/results/memory-commands.md
fi
KEEP=0
while [ $# -gt 0 ]; do
  common_option "$@"
  if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
  case $1 in
    --chunks) CHUNKS=$2; shift 2 ;;
    *) echo "memory.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$COMMANDS" = 1 ]; then
  # shellcheck source=memory_commands.sh
  source "$BENCHES/memory_commands.sh"
  exit 0
fi

RUN=$SCRATCH/run
META=$RUN/meta.tsv
CORPUS=$SCRATCH/corpus
mkdir -p "$RUN/logs"
: >"$META"
build_cairn_and_generator
SYNTH=$CARGO_TARGET_DIR/release/synth_repo
generate_corpus 1
record_machine
echo "$CAIRN_PASSWORD" >"$RUN/password"
SOURCES=("$CORPUS/night1/mongo" "$CORPUS/night1/docker" "$CORPUS/night1/files")

ROWS=$RUN/rows.tsv
: >"$ROWS"
IFS=, read -r -a CHUNK_LIST <<<"$CHUNKS"
for n in "${CHUNK_LIST[@]}"; do
  repo=$SCRATCH/repo-$n cache=$SCRATCH/cache-$n
  rm -rf "$repo" "$cache"
  "$CAIRN" -r "$repo" --cache-dir "$cache" --quiet init
  log "adding $n synthetic chunks"
  "$SYNTH" --repo "$repo" --password-file "$RUN/password" --blobs "$n" --seed "$SEED" >"$RUN/logs/synth-$n.log"
  rm -rf "$cache"
  timed "$RUN/logs/rebuild-$n.log" "$CAIRN" -r "$repo" --cache-dir "$cache" index rebuild
  rebuild_secs=$SECS rebuild_rss=$RSS_KIB
  cache_bytes=$(du -sb "$cache" | cut -f1)
  timed "$RUN/logs/backup-$n.log" "$CAIRN" -r "$repo" --cache-dir "$cache" backup "${SOURCES[@]}" --json
  backup_secs=$SECS backup_rss=$RSS_KIB
  added=$(grep '"message_type":"summary"' "$RUN/logs/backup-$n.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_added"])')
  timed "$RUN/logs/nocache-$n.log" "$CAIRN" -r "$repo" --no-cache backup "${SOURCES[@]}" --force --json
  nocache_secs=$SECS nocache_rss=$RSS_KIB
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$rebuild_secs" "$rebuild_rss" "$cache_bytes" \
    "$backup_secs" "$backup_rss" "$added" "$nocache_secs" "$nocache_rss" >>"$ROWS"
  [ "$KEEP" = 1 ] || rm -rf "$repo" "$cache"
done

{
  echo "# Memory against repository size"
  echo
  echo "\`benches/memory.sh --chunks $CHUNKS --size-gib $SIZE_GIB\`, $(sed -n 's/^date\t//p' "$META"),"
  echo "$(sed -n 's/^cpu\t//p' "$META"), $(sed -n 's/^memory\t//p' "$META"), $(sed -n 's/^cairn_version\t//p' "$META")."
  echo
  echo "| chunks already stored | index rebuild s | rebuild peak RSS MiB | cache MB | backup adding data s | backup peak RSS MiB | new data MB | --no-cache --force backup s | its peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' '{printf "| %d | %.1f | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f | %.0f |\n", $1, $2, $3/1024, $4/1e6, $5, $6/1024, $7/1e6, $8, $9/1024}' "$ROWS"
} >"$OUT"
cat "$OUT"
[ "$KEEP" = 1 ] || rm -rf "$CORPUS"
