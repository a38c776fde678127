#!/usr/bin/env bash
# The fidelity matrix of tests/it/fidelity.rs run through cairn and restic (the reference): which
# properties of a restored tree each tool keeps.
#
#   benches/fidelity_restic.sh [--cairn PATH] [--scratch DIR] [--out FILE] [--keep]
#
# Run as root (device nodes, foreign owners and trusted.* need it). Installs restic and the acl
# package from the distribution if missing. Uses the cairn binary given with --cairn, else
# target/debug/cairn or target/release/cairn of this workspace (built with `cargo build -p
# cairn-cli` if neither exists). Builds the matrix with python3 (os.mknod, os.setxattr, setfacl, …),
# backs it up with each tool into a fresh local repository, restores it into a fresh directory,
# and has one checker compare each property of the restored tree with the source. Writes a
# Markdown table (property, restic, cairn) to --out (default benches/results/fidelity-restic.md)
# and prints it.
set -euo pipefail

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCHES/.." && pwd)
SCRATCH=${TMPDIR:-/tmp}/cairn-fidelity
OUT=$BENCHES/results/fidelity-restic.md
CAIRN=
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --cairn) CAIRN=${2:?}; shift 2 ;;
    --scratch) SCRATCH=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fidelity_restic.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "fidelity_restic.sh: run as root" >&2; exit 1; }
log() { echo "[fidelity $(date +%T)] $*" >&2; }

packages=()
command -v restic >/dev/null || packages+=(restic)
command -v setfacl >/dev/null || packages+=(acl)
if [ ${#packages[@]} -gt 0 ]; then
  log "installing ${packages[*]} from the distribution"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${packages[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q "${packages[@]}" >&2; }
fi
if [ -z "$CAIRN" ]; then
  for candidate in "$ROOT/target/debug/cairn" "$ROOT/target/release/cairn"; do
    [ -x "$candidate" ] && CAIRN=$candidate && break
  done
fi
if [ -z "$CAIRN" ]; then
  log "building cairn (debug)"
  (cd "$ROOT" && cargo build --quiet -p cairn-cli)
  CAIRN=$ROOT/target/debug/cairn
fi

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
[ "$KEEP" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT
export CAIRN_PASSWORD=fidelity RESTIC_PASSWORD=fidelity
export CAIRN_CACHE_DIR=$SCRATCH/cairn-cache RESTIC_CACHE_DIR=$SCRATCH/restic-cache
SOURCE=$SCRATCH/source

checker() { python3 - "$@" <<'PY'
import os, socket, stat, subprocess, sys

def build(root):
    def at(p): return os.path.join(root, p)
    for d in ["", "empty-dir", "sticky", "setgid-dir", "private", "links", "hl/a", "hl/b", "hl/c",
              "special", "owners", "xattr/dir", "acl/default-dir", "names"]:
        os.makedirs(at(d), exist_ok=True)
    def write(p, data):
        with open(at(p) if isinstance(p, str) else os.path.join(root.encode(), p), "wb") as f:
            f.write(data)
    write("empty", b""); write("small.txt", b"small\n"); write("big.bin", os.urandom(3 << 20))
    write(b"names/bad-\xff\xfe", b"latin1"); write("names/new\nline", b"newline")
    write("names/" + "n" * 255, b"long")
    with open(at("sparse.img"), "wb") as f:
        f.truncate(16 << 20)
        for offset in (0, 8 << 20, (16 << 20) - 4096):
            f.seek(offset); f.write(os.urandom(4096))
    write("setuid", b"#!/bin/sh\n"); write("setgid", b"#!/bin/sh\n")
    os.symlink("nowhere/at/all", at("links/dangling")); os.symlink("/etc/hostname", at("links/absolute"))
    os.symlink("../small.txt", at("links/relative")); os.symlink("../empty-dir", at("links/to-dir"))
    write("hl/a/two", b"two links\n"); os.link(at("hl/a/two"), at("hl/b/two"))
    write("hl/a/three", os.urandom(100000))
    os.link(at("hl/a/three"), at("hl/b/three")); os.link(at("hl/a/three"), at("hl/c/three"))
    os.mkfifo(at("special/fifo"), 0o640)
    os.mknod(at("special/null"), 0o640 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(at("special/loop"), 0o640 | stat.S_IFBLK, os.makedev(7, 200))
    s = socket.socket(socket.AF_UNIX); s.bind(at("special/sock")); s.close()
    write("owners/foreign", b"foreign\n"); os.lchown(at("owners/foreign"), 4242, 4343)
    write("owners/named", b"named\n"); os.lchown(at("owners/named"), 1, 1)
    write("xattr/file", b"attributes\n")
    os.setxattr(at("xattr/file"), "user.comment", b"hello")
    os.setxattr(at("xattr/file"), "trusted.cairn", b"trusted value")
    os.setxattr(at("xattr/file"), "security.cairn", b"security value")
    os.setxattr(at("xattr/dir"), "user.dir", b"on a directory")
    write("acl/masked", b"masked group\n"); os.chmod(at("acl/masked"), 0o640)
    subprocess.run(["setfacl", "-m", "u:1000:rwx,g::r--,m::rwx", at("acl/masked")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1000:r-x,g:100:rwx,o::---", at("acl/default-dir")], check=True)
    for p, m in [("setuid", 0o4755), ("setgid", 0o2755), ("sticky", 0o1777), ("setgid-dir", 0o2775),
                 ("private", 0o700), ("owners/named", 0o640)]:
        os.chmod(at(p), m)
    paths = sorted(walk(root), key=lambda p: -p.count(b"/"))
    for i, p in enumerate(paths):
        t = (1_600_000_000 + i * 86400) * 10**9 + 123_456_789 - i * 1000
        os.utime(os.path.join(root.encode(), p) if p else root, ns=(t, t), follow_symlinks=False)

def walk(root):
    out = [b""]
    for d, dirs, files in os.walk(root.encode()):
        rel = os.path.relpath(d, root.encode())
        rel = b"" if rel == b"." else rel + b"/"
        out += [rel + n for n in dirs + files]
    return out

def xattrs(path, prefix):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n.startswith(prefix)}

def acl(path, default):
    args = ["getfacl", "-n", "-p", "--omit-header"] + (["-d"] if default else ["-a"])
    r = subprocess.run(args + [path], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None

def read(root):
    out = {}
    for rel in walk(root):
        path = os.path.join(root.encode(), rel) if rel else root.encode()
        st = os.lstat(path)
        e = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns,
             "ino": st.st_ino, "rdev": st.st_rdev, "size": st.st_size, "blocks": st.st_blocks}
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f: e["content"] = f.read()
        if stat.S_ISLNK(st.st_mode): e["target"] = os.readlink(path)
        for ns in ("user.", "trusted.", "security."): e[ns] = xattrs(path, ns)
        e["acl"] = acl(path, False) if not stat.S_ISLNK(st.st_mode) else None
        e["dacl"] = acl(path, True) if stat.S_ISDIR(st.st_mode) else None
        out[rel] = e
    return out

def verdict(src, dst):
    rows = []
    long_name = b"names/" + b"n" * 255
    def prop(name, paths, same):
        # The long name has its own row; the other rows judge the other entries.
        paths = [p for p in paths if p in src and (p != long_name or name == "255-byte names")]
        missing = [p for p in paths if p not in dst]
        bad = [p for p in paths if p in dst and not same(src[p], dst[p])]
        if not paths: rows.append((name, "n/a")); return
        if not missing and not bad: rows.append((name, "kept"))
        else:
            lost = missing + bad
            rows.append((name, "lost (%d of %d: %s)" % (len(lost), len(paths), lost[0].decode(errors="replace")[:40].replace("\n", "\\n"))))
    def kind(p): return stat.S_IFMT(src[p]["mode"]) if p in src else None
    regular = [p for p in src if kind(p) == stat.S_IFREG]
    prop("file content", regular, lambda a, b: a.get("content") == b.get("content"))
    prop("empty files and directories", [b"empty", b"empty-dir"], lambda a, b: a["mode"] == b["mode"])
    prop("non-UTF-8 names", [b"names/bad-\xff\xfe"], lambda a, b: a.get("content") == b.get("content"))
    prop("names with a newline", [b"names/new\nline"], lambda a, b: a.get("content") == b.get("content"))
    prop("255-byte names", [long_name], lambda a, b: a.get("content") == b.get("content"))
    prop("symlink targets", [p for p in src if kind(p) == stat.S_IFLNK], lambda a, b: a.get("target") == b.get("target"))
    prop("FIFOs", [b"special/fifo"], lambda a, b: a["mode"] == b["mode"])
    prop("character devices", [b"special/null"], lambda a, b: (a["mode"], a["rdev"]) == (b["mode"], b["rdev"]))
    prop("block devices", [b"special/loop"], lambda a, b: (a["mode"], a["rdev"]) == (b["mode"], b["rdev"]))
    rows.append(("sockets", "skipped" if b"special/sock" not in dst else "recreated"))
    plain = [p for p in src if kind(p) in (stat.S_IFREG, stat.S_IFDIR) and p not in (b"setuid", b"setgid", b"sticky", b"setgid-dir")]
    prop("permission bits", plain, lambda a, b: a["mode"] == b["mode"])
    prop("setuid, setgid, sticky", [b"setuid", b"setgid", b"sticky", b"setgid-dir"], lambda a, b: a["mode"] == b["mode"])
    prop("owner and group ids", [p for p in src if p != b"special/sock"], lambda a, b: (a["uid"], a["gid"]) == (b["uid"], b["gid"]))
    notlink = [p for p in src if kind(p) not in (stat.S_IFLNK, stat.S_IFSOCK)]
    prop("mtime (nanoseconds)", notlink, lambda a, b: a["mtime"] == b["mtime"])
    prop("mtime of symlinks", [p for p in src if kind(p) == stat.S_IFLNK], lambda a, b: a["mtime"] == b["mtime"])
    for ns in ("user.", "trusted.", "security."):
        prop("xattrs %s*" % ns, [p for p in src if src[p][ns]], lambda a, b, ns=ns: a[ns] == b[ns])
    prop("access ACL (group::r-- under mask::rwx)", [b"acl/masked"], lambda a, b: a["acl"] == b["acl"])
    prop("default ACL", [b"acl/default-dir"], lambda a, b: a["dacl"] == b["dacl"])
    def groups(t): 
        g = {}
        for p, e in t.items():
            if stat.S_ISREG(e["mode"]): g.setdefault(e["ino"], set()).add(p)
        return sorted(sorted(s) for s in g.values() if len(s) > 1)
    rows.append(("hard links (2 and 3 across directories)", "kept" if groups(src) == groups(dst) else "lost (copies)"))
    s = dst.get(b"sparse.img")
    rows.append(("sparse files", "n/a" if s is None else ("kept" if s["blocks"] * 512 < s["size"] else "lost (fully allocated)")))
    return rows

if sys.argv[1] == "build":
    build(sys.argv[2])
else:
    src = read(sys.argv[2])
    for tool_dir in sys.argv[3:]:
        print("\t".join("%s\t%s" % row for row in verdict(src, read(tool_dir) if os.path.isdir(tool_dir) else {})))
PY
}

log "building the matrix in $SOURCE"
checker build "$SOURCE"

log "cairn: $CAIRN"
CAIRN_REPOSITORY=$SCRATCH/cairn-repo "$CAIRN" init >/dev/null
CAIRN_REPOSITORY=$SCRATCH/cairn-repo "$CAIRN" backup "$SOURCE" >"$SCRATCH/cairn-backup.log" 2>&1 || true
CAIRN_REPOSITORY=$SCRATCH/cairn-repo "$CAIRN" restore "latest:$SOURCE" --target "$SCRATCH/cairn-out" \
  >"$SCRATCH/cairn-restore.log" 2>&1 || log "cairn restore exited $? (see $SCRATCH/cairn-restore.log)"

log "restic: $(restic version | head -1)"
restic -r "$SCRATCH/restic-repo" init >/dev/null
restic -r "$SCRATCH/restic-repo" backup "$SOURCE" >"$SCRATCH/restic-backup.log" 2>&1 || true
restic -r "$SCRATCH/restic-repo" restore latest --target "$SCRATCH/restic-out" \
  >"$SCRATCH/restic-restore.log" 2>&1 || log "restic restore exited $? (see $SCRATCH/restic-restore.log)"

# restic restores the absolute path below its target.
checker compare "$SOURCE" "$SCRATCH/restic-out$SOURCE" "$SCRATCH/cairn-out" >"$SCRATCH/rows.tsv"
mkdir -p "$(dirname "$OUT")"
{
  echo "# Fidelity: what a restore gives back (benches/fidelity_restic.sh)"
  echo
  echo "$(date -u +%F), $(restic version | head -1), cairn $("$CAIRN" --version | awk '{print $2}'); run as root on $(df -T "$SCRATCH" | awk 'NR==2 {print $2}')."
  echo
  echo "| property | restic | cairn |"
  echo "|---|---|---|"
  python3 - "$SCRATCH/rows.tsv" <<'PY'
import sys
restic, cairn = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
for i in range(0, len(restic), 2):
    print("| %s | %s | %s |" % (restic[i], restic[i + 1], cairn[i + 1]))
PY
} >"$OUT"
cat "$OUT"
