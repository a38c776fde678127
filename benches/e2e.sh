#!/usr/bin/env bash
# End-to-end comparison of cairn with restic, borg and rustic on a generated two-night corpus.
#
#   benches/e2e.sh [--size-gib N] [--reps N] [--seed N] [--scratch DIR] [--tools cairn,restic,borg,rustic]
#                  [--out FILE] [--keep] [--s3] [--s3-latency 10ms] [--s3-rate 50M] [--build-rustic]
#
# Builds cairn (release, CARGO_TARGET_DIR, default /tmp/bench-target), installs restic and borgbackup
# from the distribution if missing, generates a corpus with benches' gen_corpus (default 1 GiB per
# night; 0.25 GiB with --s3) and, for every tool in the same run and with repetitions in alternating
# tool order, measures wall time and peak RSS (/usr/bin/time -f '%e %M') of:
#   init, initial backup of night 1 (mongo archive, docker tar and the small-file tree, as files,
#   one backup command), unchanged re-backup, night-2 backup, restore of night 2 (then compared with
#   the corpus, untimed), read-all verification; plus the repository size after each step.
# The three datasets are backed up from a fixed "live" directory that is updated in place from
# night 1 to night 2 (only files whose size or mtime differ are rewritten), as on a real server,
# so every tool can use its parent snapshot / files cache.
#
# Local mode writes benches/results/e2e-local.md (restic, borg, rustic). --s3 starts moto through
# tests/servers.sh and compares cairn with restic and rustic on S3 (borg has no S3 backend), counting
# requests from moto's request log, and writes benches/results/e2e-s3.md. --s3-latency D (implies
# --s3) puts benches' latency_proxy between every tool and moto, adding D (e.g. 10ms) each way and,
# with --s3-rate R (bytes per second: 50M), capping each direction to R; requests are then counted
# at the proxy (its request log), the same place for every tool; it writes
# benches/results/e2e-s3-latency.md.
#
# rustic is looked for at .cache/rustic/bin/rustic, then on PATH; --build-rustic builds it there
# once (cargo install rustic-rs --locked --root .cache/rustic). When it is missing the script says so
# and leaves its column out.
#
# Settings: cairn defaults; restic repository v2, default chunking, --compression auto; borg 1.2
# --encryption repokey-blake2 --compression zstd,3, default chunker. Passwords come from
# CAIRN_PASSWORD, RESTIC_PASSWORD and BORG_PASSPHRASE. Caches live in the scratch directory and are
# fresh for every repetition.
set -euo pipefail

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCHES/.." && pwd)
BENCH_NAME=e2e
# shellcheck source=lib.sh
source "$BENCHES/lib.sh"

SIZE_GIB=
REPS=2
SEED=42
SCRATCH=${TMPDIR:-/tmp}/cairn-e2e
TOOLS=
OUT=
KEEP=0
S3=0
S3_LATENCY=
S3_RATE=
PROXY_STATS=
BUILD_RUSTIC=0
while [ $# -gt 0 ]; do
  common_option "$@"
  if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
  case $1 in
    --s3) S3=1; shift ;;
    --s3-latency) S3=1; S3_LATENCY=${2:?}; shift 2 ;;
    --s3-rate) S3_RATE=${2:?}; shift 2 ;;
    --build-rustic) BUILD_RUSTIC=1; shift ;;
    *) echo "e2e.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -n "$S3_LATENCY" ]; then
  SIZE_GIB=${SIZE_GIB:-0.25}; TOOLS=${TOOLS:-cairn,restic,rustic}; OUT=${OUT:-$BENCHES/results/e2e-s3-latency.md}
elif [ "$S3" = 1 ]; then
  SIZE_GIB=${SIZE_GIB:-0.25}; TOOLS=${TOOLS:-cairn,restic,rustic}; OUT=${OUT:-$BENCHES/results/e2e-s3.md}
else
  SIZE_GIB=${SIZE_GIB:-1}; TOOLS=${TOOLS:-cairn,restic,borg,rustic}; OUT=${OUT:-$BENCHES/results/e2e-local.md}
fi
[ -z "$S3_RATE" ] || [ -n "$S3_LATENCY" ] || die "--s3-rate needs --s3-latency (the proxy caps the rate)"
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
MODE=$([ "$S3" = 1 ] && echo s3 || echo local)
[ -n "$S3_LATENCY" ] && MODE=s3-latency

RUN=$SCRATCH/run-$MODE
CORPUS=$SCRATCH/corpus
LIVE=$SCRATCH/live
mkdir -p "$SCRATCH"
rm -rf "$RUN"
mkdir -p "$RUN/logs"
TIMES=$RUN/times.tsv      # tool rep step seconds rss_kib
SIZES=$RUN/sizes.tsv      # tool rep step repository_bytes
REQS=$RUN/requests.tsv    # tool rep step method count   (S3 only)
BYTES=$RUN/bytes.tsv      # tool rep step bytes_received (through the latency proxy only)
FLUSH=$RUN/flush.tsv      # tool rep step seconds of the sync after the step
CMDS=$RUN/commands.tsv    # tool step command            (first repetition)
META=$RUN/meta.tsv        # key value
: >"$TIMES"; : >"$FLUSH"; : >"$SIZES"; : >"$REQS"; : >"$BYTES"; : >"$CMDS"; : >"$META"

# ------------------------------------------------------------------------------------ (a) build
build_cairn_and_generator

# ---------------------------------------------------------------------------------- (b) peers
install_peers "${TOOL_LIST[@]}"
drop_missing_tools

# ----------------------------------------------------------------------------------- (c) corpus
generate_corpus 1,2
N1_BYTES=$(tree_bytes "$CORPUS/night1")
N2_BYTES=$(tree_bytes "$CORPUS/night2")
meta n1_bytes "$N1_BYTES"
meta n2_bytes "$N2_BYTES"
meta n1_files "$(find "$CORPUS/night1" -type f | wc -l)"

# ------------------------------------------------------------------------------------ S3 server
if [ "$S3" = 1 ]; then
  # shellcheck source=../tests/servers.sh
  source "$ROOT/tests/servers.sh"
  install_test_servers
  # Run start_test_servers against a private cache directory that links to the installed servers,
  # so that moto's request log (used to count requests) is ours alone.
  shared_cache=$_cache
  _cache=$RUN/servers
  mkdir -p "$_cache"
  for d in "$shared_cache"/moto-* "$shared_cache"/azurite-*; do ln -sfn "$d" "$_cache/$(basename "$d")"; done
  trap 'stop_test_servers' EXIT
  start_test_servers
  MOTO_LOG=$_cache/moto.log
  MOTO_PY=$shared_cache/moto-$MOTO_VERSION/bin/python
  meta s3_endpoint "$CAIRN_TEST_S3_ENDPOINT"
  meta moto "moto $MOTO_VERSION (in memory, 127.0.0.1)"
  # Where the tools send their requests: moto itself, or the latency proxy in front of it.
  TOOL_ENDPOINT=$CAIRN_TEST_S3_ENDPOINT
  REQUEST_LOG=$MOTO_LOG
  if [ -n "$S3_LATENCY" ]; then
    delay_ms=${S3_LATENCY%ms}
    REQUEST_LOG=$RUN/proxy-requests.log
    PROXY_STATS=$RUN/proxy-stats.txt
    : >"$REQUEST_LOG"
    "$CARGO_TARGET_DIR/release/latency_proxy" --upstream "${CAIRN_TEST_S3_ENDPOINT#http://}" \
      --delay-ms "$delay_ms" ${S3_RATE:+--rate "$S3_RATE"} --request-log "$REQUEST_LOG" \
      --stats "$PROXY_STATS" >"$RUN/proxy.addr" &
    PROXY_PID=$!
    trap 'kill "$PROXY_PID" 2>/dev/null; stop_test_servers' EXIT
    for _ in $(seq 50); do [ -s "$RUN/proxy.addr" ] && break; sleep 0.1; done
    TOOL_ENDPOINT=http://$(cat "$RUN/proxy.addr")
    meta proxy "benches latency_proxy: +${delay_ms} ms each way${S3_RATE:+, each direction capped at $S3_RATE bytes/s}"
  fi
  export AWS_ENDPOINT=$TOOL_ENDPOINT
  RUSTIC_S3_ENV=("RUSTIC_REPO_OPT_ENDPOINT=$TOOL_ENDPOINT" RUSTIC_REPO_OPT_BUCKET=cairn-test
    RUSTIC_REPO_OPT_REGION=us-east-1 "RUSTIC_REPO_OPT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
    "RUSTIC_REPO_OPT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" RUSTIC_REPO_OPT_ENABLE_VIRTUAL_HOST_STYLE=false)
fi

# Total bytes of the objects under an S3 prefix in the test bucket.
s3_bytes() {
  "$MOTO_PY" - "$1" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["CAIRN_TEST_S3_ENDPOINT"])
total = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="cairn-test", Prefix=sys.argv[1] + "/"):
    total += sum(o["Size"] for o in page.get("Contents", []))
print(total)
PY
}

# ----------------------------------------------------------------------------- (d) measurements
repo_bytes() {
  if [ "$S3" = 1 ]; then s3_bytes "$REPO_KEY"; else du -sb "$REPO" | cut -f1; fi
}

# Bytes the latency proxy has delivered to its clients so far (0 before its first response).
proxy_bytes_to_client() {
  local line
  line=$(cat "$PROXY_STATS" 2>/dev/null || true)
  [[ $line =~ bytes_to_client\ ([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 0
}

# Runs one step under /usr/bin/time and records time, peak RSS, repository size, (S3) requests
# and (through the latency proxy) bytes received.
measure() {
  local tool=$1 rep=$2 step=$3
  tool_cmd "$tool" "$step"
  [ "$rep" = 1 ] && printf '%s\t%s\t%s\n' "$tool" "$step" "${CMD[*]}" >>"$CMDS"
  local logf="$RUN/logs/$tool-$rep-$step.log" before=0
  [ "$S3" = 1 ] && before=$(wc -l <"$REQUEST_LOG")
  local bytes_before=0
  if [ -n "$PROXY_STATS" ]; then bytes_before=$(proxy_bytes_to_client); fi
  timed "$logf" "${CMD[@]}"
  local secs=$SECS rss=$RSS_KIB
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$rep" "$step" "$secs" "$rss" >>"$TIMES"
  # Writeback the step left behind (a tool that does not fsync its repository leaves more).
  /usr/bin/time -f '%e' -o "$RUN/time.out" sync
  printf '%s\t%s\t%s\t%s\n' "$tool" "$rep" "$step" "$(cat "$RUN/time.out")" >>"$FLUSH"
  if [ "$S3" = 1 ]; then
    sleep 0.3
    # werkzeug colours some lines; a GET on the bucket with a list query is a LIST.
    tail -n +"$((before + 1))" "$REQUEST_LOG" | sed -E 's/\x1b\[[0-9;]*m//g' |
      grep -oE '^"?(GET|PUT|POST|HEAD|DELETE) [^ ]*|"(GET|PUT|POST|HEAD|DELETE) [^ ]*' | tr -d '"' |
      awk '{ m = $1; if (m == "GET" && $2 ~ /[?&](list-type|prefix|delimiter)=/) m = "LIST"; n[m]++ }
           END { for (m in n) print n[m], m }' | while read -r count method; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$rep" "$step" "$method" "$count" >>"$REQS"
      done
  fi
  # (the sleep above lets the proxy's stats file, rewritten every 100 ms, catch up)
  if [ -n "$PROXY_STATS" ]; then
    printf '%s\t%s\t%s\t%s\n' "$tool" "$rep" "$step" "$(($(proxy_bytes_to_client) - bytes_before))" >>"$BYTES"
  fi
  # (after counting requests: listing the repository's objects is itself a request)
  printf '%s\t%s\t%s\t%s\n' "$tool" "$rep" "$step" "$(repo_bytes)" >>"$SIZES"
  log "$tool rep $rep $step: ${secs}s, peak RSS $((rss / 1024)) MiB"
}

run_tool() {
  local tool=$1 rep=$2
  CACHE=$SCRATCH/cache/$tool-$rep
  TARGET=$SCRATCH/restore/$tool-$rep
  if [ "$S3" = 1 ]; then
    REPO_KEY=$tool-$MODE-$rep
    case $tool in
      cairn) REPO=s3://cairn-test/$REPO_KEY ;;
      restic) REPO=s3:$TOOL_ENDPOINT/cairn-test/$REPO_KEY ;;
      rustic) REPO=opendal:s3; RUSTIC_ENV=("${RUSTIC_S3_ENV[@]}" "RUSTIC_REPO_OPT_ROOT=/$REPO_KEY") ;;
    esac
  else
    REPO=$SCRATCH/repos/$tool-$rep
    rm -rf "$REPO"
    mkdir -p "$(dirname "$REPO")"
  fi
  rm -rf "$CACHE" "$TARGET"
  mkdir -p "$CACHE"
  sync_tree "$CORPUS/night1" "$LIVE"
  measure "$tool" "$rep" init
  measure "$tool" "$rep" backup1
  measure "$tool" "$rep" backup1-again
  sync_tree "$CORPUS/night2" "$LIVE"
  measure "$tool" "$rep" backup2
  mkdir -p "$TARGET"
  ARCHIVE=backup2 measure "$tool" "$rep" restore
  diff -r "$CORPUS/night2" "$TARGET$LIVE" >"$RUN/logs/$tool-$rep-restore.diff" ||
    die "$tool: the restored night 2 differs from the corpus (see $RUN/logs/$tool-$rep-restore.diff)"
  measure "$tool" "$rep" check
  printf '%s\t%s\t%s\t%s\n' "$tool" "$rep" cache "$(du -sb "$CACHE" | cut -f1)" >>"$SIZES"
}

meta mode "$MODE"
meta size_gib "$SIZE_GIB"
meta seed "$SEED"
meta reps "$REPS"
meta tools "$TOOLS"
record_machine "${TOOL_LIST[@]}"

# Nothing is deleted while measuring: on a filesystem mounted with `discard` (as here), freeing
# gigabytes slows the following file creations down by an order of magnitude.
rm -rf "$SCRATCH/repos" "$SCRATCH/cache" "$SCRATCH/restore"
sync
run_repetitions
# Keep cairn's backup summaries (they carry per-run counters such as requests).
for f in "$RUN"/logs/cairn-*-backup*.log; do
  [ -e "$f" ] && printf '%s\t%s\n' "$(basename "$f" .log)" "$(grep -h '"message_type":"summary"' "$f" | tail -1)" >>"$RUN/cairn-summaries.tsv"
done

# ------------------------------------------------------------------------------------ (e) report
mkdir -p "$(dirname "$OUT")"
python3 - "$RUN" "$OUT" <<'PY'
import collections, json, os, statistics, sys

run, out = sys.argv[1], sys.argv[2]
def rows(name):
    path = os.path.join(run, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]

meta = dict(rows("meta.tsv"))
tools = meta["tools"].split(",")
s3 = meta["mode"].startswith("s3")
n1, n2 = int(meta["n1_bytes"]), int(meta["n2_bytes"])
times = collections.defaultdict(list)   # (tool, step) -> [(rep, secs, rss_kib)]
for tool, rep, step, secs, rss in rows("times.tsv"):
    times[tool, step].append((int(rep), float(secs), int(rss)))
flush = collections.defaultdict(dict)   # (tool, step) -> {rep: secs}
for tool, rep, step, secs_ in rows("flush.tsv"):
    flush[tool, step][int(rep)] = float(secs_)
sizes = collections.defaultdict(list)
for tool, rep, step, size in rows("sizes.tsv"):
    sizes[tool, step].append(int(size))
reqs = collections.defaultdict(lambda: collections.Counter())
for tool, rep, step, method, count in rows("requests.tsv"):
    reqs[tool, step, int(rep)][method] += int(count)
received = collections.defaultdict(dict)  # (tool, step) -> {rep: bytes the proxy delivered}
for tool, rep, step, nbytes in rows("bytes.tsv"):
    received[tool, step][int(rep)] = int(nbytes)

steps = [
    ("init", "init", None),
    ("backup1", "initial backup (night 1)", n1),
    ("backup1-again", "unchanged re-backup", n1),
    ("backup2", "night-2 backup", n2),
    ("restore", "restore night 2", n2),
    ("check", "read-all verification", "repo"),
]
MB = 1e6
def mean(xs): return statistics.mean(xs) if xs else float("nan")
def secs(tool, step): return [t for _, t, _ in sorted(times[tool, step])]
def best(tool, step): return min(secs(tool, step))
def throughput(tool, step, nbytes):
    if nbytes == "repo":
        nbytes = mean(sizes[tool, "backup2"])
    return nbytes / MB / best(tool, step)
def fmt_s(xs): return f"{min(xs):.2f} ({' / '.join(f'{x:.2f}' for x in xs)})"
def ratio(a, b): return f"{a / b:.2f}" if b else "–"
def rep_ratios(tool, peer, step):
    a = dict((r, t) for r, t, _ in times[tool, step])
    b = dict((r, t) for r, t, _ in times[peer, step])
    rs = [a[r] / b[r] for r in sorted(a) if r in b and b[r] > 0]
    return "–" if not rs else f"{min(rs):.2f}–{max(rs):.2f}"
peers = [t for t in tools if t != "cairn"]

L = []
title = ("S3 (moto) through " + meta["proxy"]) if "proxy" in meta else "S3 (moto)" if s3 else "local repository"
L.append(f"# End-to-end: cairn vs {', '.join(peers)} — {title}")
L.append("")
mode_flag = {"local": "", "s3": " --s3", "s3-latency": " --s3-latency …"}[meta["mode"]]
L.append(f"Generated by `benches/e2e.sh{mode_flag} --size-gib {meta['size_gib']}` on {meta['date']}. "
         f"Corpus: `gen_corpus --seed {meta['seed']} --size-gib {meta['size_gib']}` "
         f"(night 1: {n1 / MB:.1f} MB in {meta['n1_files']} files; night 2: {n2 / MB:.1f} MB), "
         f"{meta['reps']} repetitions with the tool order alternating, fresh repository and cache for each.")
L.append("Times are wall seconds: the best repetition (then each repetition in order); MB = 10^6 bytes; "
         "throughput = input bytes / best time (for verification: repository bytes / time). "
         "**Ratios are cairn ÷ peer of the best times: above 1 means cairn is slower / larger**; "
         "in parentheses the range of the per-repetition ratios. `sync` runs (untimed) before every step. The machine is shared (other engineers' builds and tests), "
         "so absolute numbers are noisy; compare within a table.")
L.append("")
L.append("## Time and throughput")
L.append("")
head = ["step"] + [f"{t} s" for t in tools] + [f"{t} MB/s" for t in tools] + [f"cairn/{p} time" for p in peers]
L.append("| " + " | ".join(head) + " |")
L.append("|" + "---|" * len(head))
for step, label, nbytes in steps:
    if not times["cairn", step]:
        continue
    cells = [label] + [fmt_s(secs(t, step)) for t in tools]
    cells += ["–" if nbytes is None else f"{throughput(t, step, nbytes):.1f}" for t in tools]
    cells += [f"**{ratio(best('cairn', step), best(p, step))}** ({rep_ratios('cairn', p, step)})" for p in peers]
    L.append("| " + " | ".join(cells) + " |")
total = ["backup1", "backup1-again", "backup2", "restore", "check"]
cells = ["**sum of the steps except init**"] + [f"{sum(best(t, s) for s in total):.2f}" for t in tools] + ["" for _ in tools]
cells += [f"**{ratio(sum(best('cairn', s) for s in total), sum(best(p, s) for s in total))}**" for p in peers]
L.append("| " + " | ".join(cells) + " |")
L.append("")
L.append("## Time including the writeback the step leaves (step + the `sync` after it)")
L.append("")
L.append("A tool that fsyncs its repository pays for durability inside the step; one that does not leaves dirty pages "
         "that the following (untimed above) `sync` writes. Best repetition of step + sync.")
L.append("")
head = ["step"] + [f"{t} s" for t in tools] + [f"{t} sync s (max)" for t in tools] + [f"cairn/{p}" for p in peers]
L.append("| " + " | ".join(head) + " |")
L.append("|" + "---|" * len(head))
for step, label, _ in steps[1:]:
    if not times["cairn", step]:
        continue
    both = {t: min(x + flush[t, step].get(r, 0.0) for r, x, _ in times[t, step]) for t in tools}
    syncs = {t: max(flush[t, step].values(), default=0.0) for t in tools}
    L.append("| " + " | ".join([label] + [f"{both[t]:.2f}" for t in tools] + [f"{syncs[t]:.2f}" for t in tools]
                              + [f"**{ratio(both['cairn'], both[p])}**" for p in peers]) + " |")
L.append("")
L.append("## Peak RSS (MiB, the larger of the repetitions)")
L.append("")
head = ["step"] + tools + [f"cairn/{p}" for p in peers]
L.append("| " + " | ".join(head) + " |")
L.append("|" + "---|" * len(head))
for step, label, _ in steps:
    if not times["cairn", step]:
        continue
    peak = {t: max(r for _, _, r in times[t, step]) / 1024 for t in tools}
    L.append("| " + " | ".join([label] + [f"{peak[t]:.0f}" for t in tools] + [ratio(peak["cairn"], peak[p]) for p in peers]) + " |")
L.append("")
L.append("## Repository size after each step (bytes, mean of the repetitions)")
L.append("")
L.append("| " + " | ".join(head) + " |")
L.append("|" + "---|" * len(head))
for step, label, _ in steps[:4]:
    size = {t: mean(sizes[t, step]) for t in tools}
    L.append("| " + " | ".join([label] + [f"{size[t]:,.0f}" for t in tools] + [ratio(size["cairn"], size[p]) for p in peers]) + " |")
grow = {t: mean(sizes[t, "backup2"]) - mean(sizes[t, "backup1-again"]) for t in tools}
L.append("| " + " | ".join(["night-2 increment"] + [f"{grow[t]:,.0f}" for t in tools] + [ratio(grow["cairn"], grow[p]) for p in peers]) + " |")
cache = {t: mean(sizes[t, "cache"]) for t in tools}
L.append("| " + " | ".join(["local cache at the end (not in the repository)"] + [f"{cache[t]:,.0f}" for t in tools] + [ratio(cache["cairn"], cache[p]) for p in peers]) + " |")
L.append("")
L.append(f"Stored after night 1 as a share of its input: " + ", ".join(f"{t} {mean(sizes[t, 'backup1']) / n1:.1%}" for t in tools) + ".")
L.append("")

if s3:
    where = "the latency proxy's request log" if "proxy" in meta else "moto's request log"
    L.append(f"## Requests (counted from {where}, per step, mean of the repetitions)")
    L.append("")
    methods = ["GET", "LIST", "PUT", "HEAD", "POST", "DELETE"]
    with_bytes = bool(received)
    head = ["step", "tool"] + methods + ["total"] + (["MB received"] if with_bytes else [])
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for step, label, _ in steps:
        for t in tools:
            per_rep = [reqs[t, step, r] for r, _, _ in sorted(times[t, step])]
            if not per_rep:
                continue
            avg = {m: mean([c[m] for c in per_rep]) for m in methods}
            cells = [label, t] + [f"{avg[m]:.0f}" for m in methods] + [f"{sum(avg.values()):.0f}"]
            if with_bytes:
                got = list(received[t, step].values())
                cells.append(f"{mean(got) / MB:.1f}" if got else "–")
            L.append("| " + " | ".join(cells) + " |")
    L.append("")
    if with_bytes:
        L.append("MB received: response bytes (headers and bodies) the latency proxy delivered to the tool during the step, "
                 "mean of the repetitions (its `--stats` counters read before and after the step).")
        L.append("")
    summaries = rows("cairn-summaries.tsv")
    if summaries:
        L.append("cairn's own `backup --json` request counters (repetition 1): ")
        L.append("")
        for name, summary in summaries:
            if name.startswith("cairn-1-") and summary:
                L.append(f"- {name[8:]}: `{json.dumps(json.loads(summary).get('requests'))}`")
        L.append("")
        L.append(f"restic and rustic print no request counts; {where} is the one source for every tool (LIST = a GET on the bucket with a list query).")
        L.append("")

L.append("## Commands (repetition 1; REPO, caches and targets are per repetition)")
L.append("")
L.append("```sh")
for tool, step, cmd in rows("commands.tsv"):
    L.append(f"# {tool} {step}")
    L.append(cmd)
L.append("```")
L.append("")
L.append("Environment: `CAIRN_PASSWORD`, `RESTIC_PASSWORD`, `BORG_PASSPHRASE` set; the corpus and everything else in the page cache (warm).")
L.append("")
L.append("## Versions and machine")
L.append("")
for key in ["cairn_version", "restic_version", "borg_version", "rustic_version", "proxy", "rustc", "cpu", "memory", "kernel", "scratch_fs",
            "load_start", "load_end", "moto", "gen_time"]:
    if key in meta:
        L.append(f"- {key}: {meta[key]}")
with open(out, "w") as f:
    f.write("\n".join(L) + "\n")
print(f"wrote {out}")
PY
if [ "$KEEP" = 0 ]; then rm -rf "$LIVE" "$SCRATCH/repos" "$SCRATCH/cache" "$SCRATCH/restore"; fi
log "done; raw data in $RUN"
