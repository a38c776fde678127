# Shell helpers shared by the end-to-end benchmarks (benches/e2e.sh, benches/prune.sh); sourced,
# never run. The caller sets BENCH_NAME (log prefix), ROOT (the workspace), SCRATCH, RUN (its run
# directory, for scratch lists) and META (its key/value file) before using them.
# shellcheck shell=bash

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
export CAIRN_PASSWORD=e2e-bench-password RESTIC_PASSWORD=e2e-bench-password BORG_PASSPHRASE=e2e-bench-password
export RUSTIC_PASSWORD=e2e-bench-password
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no

# Reads the option at $1 if every benchmark takes it (--size-gib --reps --seed --scratch --tools
# --out --keep --help; --help prints the script's header comment) and sets SHIFT to the number of
# words it used, or to 0.
common_option() {
  SHIFT=2
  case $1 in
    --size-gib) SIZE_GIB=${2:?} ;;
    --reps) REPS=${2:?} ;;
    --seed) SEED=${2:?} ;;
    --scratch) SCRATCH=${2:?} ;;
    --tools) TOOLS=${2:?} ;;
    --out) OUT=${2:?} ;;
    --keep) KEEP=1; SHIFT=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) SHIFT=0 ;;
  esac
}

log() { echo "[$BENCH_NAME $(date +%T)] $*" >&2; }
die() { echo "$BENCH_NAME.sh: $*" >&2; exit 1; }
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# Builds cairn and gen_corpus (release) and sets CAIRN and GEN to their paths. CAIRN_BIN, when
# set, names a cairn binary to measure instead (an older build, say); nothing is built then if
# gen_corpus is already there.
build_cairn_and_generator() {
  GEN=$CARGO_TARGET_DIR/release/gen_corpus
  if [ -n "${CAIRN_BIN:-}" ]; then
    CAIRN=$CAIRN_BIN
    [ -x "$GEN" ] && return
  fi
  log "building cairn and gen_corpus (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --quiet -p cairn-cli -p cairn-benches --bins)
  CAIRN=${CAIRN_BIN:-$CARGO_TARGET_DIR/release/cairn}
}

# Sets RUSTIC to rustic's path: the workspace's .cache/rustic/bin/rustic (built once by
# `cargo install rustic-rs --locked --root .cache/rustic` when BUILD_RUSTIC=1), else rustic on PATH;
# empty (and says so) when neither exists, so the caller skips its column.
find_rustic() {
  RUSTIC=$ROOT/.cache/rustic/bin/rustic
  if [ ! -x "$RUSTIC" ] && [ "${BUILD_RUSTIC:-0}" = 1 ]; then
    log "building rustic once into $ROOT/.cache/rustic (cargo install rustic-rs --locked)"
    cargo install rustic-rs --locked --root "$ROOT/.cache/rustic" >&2 || die "building rustic failed"
  fi
  [ -x "$RUSTIC" ] || RUSTIC=$(command -v rustic || true)
  [ -n "$RUSTIC" ] || log "rustic is missing (not in $ROOT/.cache/rustic/bin nor on PATH; --build-rustic builds it): skipping its column"
}

# Drops the tools that are not installed (rustic only; the others are installed) from TOOL_LIST.
drop_missing_tools() {
  local kept=() tool
  for tool in "${TOOL_LIST[@]}"; do
    if [ "$tool" = rustic ] && [ -z "${RUSTIC:-}" ]; then continue; fi
    kept+=("$tool")
  done
  TOOL_LIST=("${kept[@]}")
  TOOLS=$(IFS=,; echo "${TOOL_LIST[*]}")
}

# Installs the peers among the named tools (restic, borg) from the distribution if missing, and
# finds rustic (see find_rustic).
install_peers() {
  local packages=() tool sudo=
  for tool in "$@"; do
    case $tool in
      restic) command -v restic >/dev/null || packages+=(restic) ;;
      borg) command -v borg >/dev/null || packages+=(borgbackup) ;;
      rustic) find_rustic ;;
      cairn) ;;
      *) die "unknown tool $tool" ;;
    esac
  done
  if [ ${#packages[@]} -gt 0 ]; then
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    log "installing ${packages[*]} from the distribution"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "${packages[@]}" >&2 ||
      { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q "${packages[@]}" >&2; }
  fi
  command -v /usr/bin/time >/dev/null || die "/usr/bin/time is missing (apt-get install time)"
}

# Total bytes of the regular files under $1 (the corpus's .stamp excluded).
tree_bytes() { find "$1" -type f ! -name .stamp -printf '%s\n' | awk '{s += $1} END {printf "%d", s}'; }

# Makes the tree $2 identical to $1, rewriting only files whose size or mtime differ (like an
# application rewriting its outputs; unchanged files keep their inode and ctime).
sync_tree() {
  local src=$1 dst=$2
  mkdir -p "$dst"
  (cd "$src" && find . -type f -printf '%P\t%s\t%T@\n' | LC_ALL=C sort) >"$RUN/src.lst"
  (cd "$dst" && find . -type f -printf '%P\t%s\t%T@\n' | LC_ALL=C sort) >"$RUN/dst.lst"
  LC_ALL=C comm -13 "$RUN/src.lst" "$RUN/dst.lst" | cut -f1 | (cd "$dst" && xargs -r -d '\n' rm -f --)
  LC_ALL=C comm -23 "$RUN/src.lst" "$RUN/dst.lst" | cut -f1 | tr '\n' '\0' >"$RUN/copy.lst"
  if [ -s "$RUN/copy.lst" ]; then
    (cd "$src" && tar -cf - --null -T "$RUN/copy.lst") | (cd "$dst" && tar -xpf -)
  fi
  find "$dst" -mindepth 1 -type d -empty -delete
}

# Runs a command under /usr/bin/time after a `sync` (so that it starts without the dirty pages of
# the previous one), its output going to the log file $1; sets SECS (wall seconds) and RSS_KIB
# (peak resident set). A failure prints the log's tail and stops the benchmark.
timed() {
  local logf=$1
  shift
  sync
  if ! /usr/bin/time -f '%e %M' -o "$RUN/time.out" "$@" >"$logf" 2>&1; then
    tail -n 20 "$logf" >&2
    die "failed: $*; log: $logf"
  fi
  read -r SECS RSS_KIB <"$RUN/time.out"
}

# Generates the nights $1 (comma-separated) of the corpus into CORPUS, unless the corpus there was
# made from the same seed, size, nights and generator binary; records gen_time.
generate_corpus() {
  local nights=$1 stamp
  stamp="seed=$SEED size=$SIZE_GIB nights=$nights gen=$(sha256sum "$GEN" | cut -c1-16)"
  if [ "$(cat "$CORPUS/.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "reusing corpus $CORPUS (seed=$SEED size=$SIZE_GIB)"
    meta gen_time reused
  else
    log "generating nights ${nights//,/ } of a $SIZE_GIB GiB corpus (seed $SEED) into $CORPUS"
    rm -rf "$CORPUS"
    /usr/bin/time -f '%e %M' -o "$RUN/gen.time" "$GEN" --out "$CORPUS" --size-gib "$SIZE_GIB" \
      --seed "$SEED" --nights "$nights" >"$RUN/logs/gen_corpus.log"
    echo "$stamp" >"$CORPUS/.stamp"
    meta gen_time "$(cut -d' ' -f1 "$RUN/gen.time")"
  fi
}

# Calls the caller's `run_tool TOOL REP` for every tool of TOOL_LIST in repetitions 1..REPS, in
# reverse order on even repetitions (so that no tool always runs first); records load_end.
run_repetitions() {
  local rep i tool order
  for rep in $(seq 1 "$REPS"); do
    order=("${TOOL_LIST[@]}")
    if [ $((rep % 2)) = 0 ]; then
      order=()
      for ((i = ${#TOOL_LIST[@]} - 1; i >= 0; i--)); do order+=("${TOOL_LIST[$i]}"); done
    fi
    log "repetition $rep: ${order[*]}"
    for tool in "${order[@]}"; do run_tool "$tool" "$rep"; done
  done
  meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# Records the machine, the build and the versions of the named tools in META.
record_machine() {
  local tool
  meta date "$(date -u +%Y-%m-%dT%H:%MZ)"
  meta cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs"
  meta memory "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  meta kernel "$(uname -sr)"
  meta scratch_fs "$(df -T "$SCRATCH" | awk 'NR == 2 {print $2}') ($SCRATCH)"
  meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
  meta cairn_version "$("$CAIRN" --version) ($(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- chunker store cli || echo ', with uncommitted changes'))"
  meta rustc "$(rustc --version)"
  for tool in "$@"; do
    case $tool in
      restic) meta restic_version "$(restic version)" ;;
      borg) meta borg_version "$(borg --version)" ;;
      rustic) meta rustic_version "$("$RUSTIC" --version) ($RUSTIC)" ;;
    esac
  done
}

# Sets CMD (an array) to TOOL's command for STEP. The caller sets REPO and CACHE, and as the step
# needs: LIVE (backups read its mongo/, docker/ and files/), STAMP (the snapshot's time as
# YYYY-MM-DDTHH:MM:SSZ, in UTC; unset: now), TARGET and ARCHIVE (what borg restores), KEEP_DAILY,
# DST (the destination repository of copy-init and copy, whose cache is "$CACHE-dst").
# A borg backup names its archive after the step.
tool_cmd() {
  local tool=$1 step=$2 sources=("$LIVE/mongo" "$LIVE/docker" "$LIVE/files") time=()
  if [ -n "${STAMP:-}" ]; then
    case $tool in
      cairn) time=(--time "$STAMP") ;;
      restic) time=(--time "$(TZ=UTC date -d "$STAMP" '+%F %T')") ;; # read in restic's TZ
      borg) time=(--timestamp "${STAMP%Z}") ;;                          # read as UTC
      rustic) time=(--time "$(TZ=UTC date -d "$STAMP" '+%F %T')") ;;
    esac
  fi
  local cairn=(env CAIRN_CACHE_DIR="$CACHE" "$CAIRN" -r "$REPO")
  local restic=(restic -r "$REPO" --cache-dir "$CACHE")
  local borg=(env BORG_BASE_DIR="$CACHE" borg)
  # rustic: its repository options (S3 endpoint, bucket, root, keys) come from RUSTIC_ENV, an
  # array of RUSTIC_REPO_OPT_*=value words the S3 mode sets.
  local rustic=(env ${RUSTIC_ENV[@]+"${RUSTIC_ENV[@]}"} "${RUSTIC:-rustic}" --no-progress -r "$REPO" --cache-dir "$CACHE")
  case $tool:$step in
    cairn:init) CMD=("${cairn[@]}" init) ;;
    cairn:backup*) CMD=("${cairn[@]}" backup "${sources[@]}" "${time[@]}" --json) ;;
    cairn:restore) CMD=("${cairn[@]}" restore latest --target "$TARGET") ;;
    cairn:check) CMD=("${cairn[@]}" check --read-data) ;;
    cairn:forget-prune) CMD=("${cairn[@]}" forget --keep-daily "$KEEP_DAILY" --prune --json) ;;
    cairn:forget) CMD=("${cairn[@]}" forget --keep-daily "$KEEP_DAILY" --json) ;;
    cairn:prune) CMD=("${cairn[@]}" prune --json) ;;
    cairn:copy-init) CMD=(env CAIRN_FROM_PASSWORD="$CAIRN_PASSWORD" CAIRN_CACHE_DIR="$CACHE-dst" "$CAIRN" -r "$DST" init --copy-chunker-params-from "$REPO") ;;
    cairn:copy) CMD=(env CAIRN_FROM_PASSWORD="$CAIRN_PASSWORD" CAIRN_CACHE_DIR="$CACHE-dst" "$CAIRN" -r "$DST" copy --from-repo "$REPO") ;;
    cairn:snapshots) CMD=("${cairn[@]}" snapshots --json) ;;
    restic:init) CMD=("${restic[@]}" init --repository-version 2) ;;
    restic:backup*) CMD=("${restic[@]}" backup --compression auto --json "${sources[@]}" "${time[@]}") ;;
    restic:restore) CMD=("${restic[@]}" restore latest --target "$TARGET") ;;
    restic:check) CMD=("${restic[@]}" check --read-data) ;;
    restic:forget-prune) CMD=("${restic[@]}" forget --keep-daily "$KEEP_DAILY" --prune) ;;
    restic:snapshots) CMD=("${restic[@]}" snapshots --json) ;;
    restic:forget) CMD=("${restic[@]}" forget --keep-daily "$KEEP_DAILY") ;;
    restic:prune) CMD=("${restic[@]}" prune) ;;
    restic:copy-init) CMD=(env RESTIC_FROM_PASSWORD="$RESTIC_PASSWORD" restic -r "$DST" --cache-dir "$CACHE-dst" init --repository-version 2 --copy-chunker-params --from-repo "$REPO") ;;
    restic:copy) CMD=(env RESTIC_FROM_PASSWORD="$RESTIC_PASSWORD" restic -r "$DST" --cache-dir "$CACHE-dst" copy --from-repo "$REPO") ;;
    rustic:init) CMD=("${rustic[@]}" init) ;;
    rustic:backup*) CMD=("${rustic[@]}" backup --json "${time[@]}" "${sources[@]}") ;;
    rustic:restore) CMD=("${rustic[@]}" restore latest "$TARGET") ;;
    rustic:check) CMD=("${rustic[@]}" check --read-data) ;;
    rustic:forget-prune) CMD=("${rustic[@]}" forget --keep-daily "$KEEP_DAILY" --prune) ;;
    rustic:snapshots) CMD=("${rustic[@]}" snapshots --json) ;;
    borg:init) CMD=("${borg[@]}" init --encryption repokey-blake2 "$REPO") ;;
    borg:backup*) CMD=("${borg[@]}" create --compression zstd,3 --json "${time[@]}" "$REPO::$step" "${sources[@]}") ;;
    borg:restore) CMD=(env -C "$TARGET" BORG_BASE_DIR="$CACHE" borg extract "$REPO::$ARCHIVE") ;;
    borg:check) CMD=("${borg[@]}" check --verify-data "$REPO") ;;
    borg:prune) CMD=("${borg[@]}" prune --keep-daily "$KEEP_DAILY" "$REPO") ;;
    borg:compact) CMD=("${borg[@]}" compact "$REPO") ;;
    borg:snapshots) CMD=("${borg[@]}" list --json "$REPO") ;;
    *) die "no command for $tool $step" ;;
  esac
}
