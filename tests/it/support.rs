//! Shared helpers of the integration tests: a temporary workspace with a repository and a runner
//! for the `cairn` binary, deterministic (seeded) data generators — random bytes, compressible
//! text, a mongodump-like archive and a docker-save-like tar — and building, scanning and
//! comparing file trees.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cairn_store::backend::Backend;
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::{CacheLocation, Repository};

/// The password of every test repository.
pub const PASSWORD: &str = "correct horse battery staple";

/// `init` options that keep key derivation cheap.
pub const CHEAP_INIT: [&str; 7] = [
    "init",
    "--kdf-memory-mib",
    "1",
    "--kdf-iterations",
    "1",
    "--kdf-parallelism",
    "1",
];

/// The `cairn` binary under test.
pub fn cairn_binary() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// The outcome of one `cairn` run.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub args: Vec<String>,
    /// The exit code, `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "cairn {:?}\n  exit code: {:?}\n  stdout: {}\n  stderr: {}",
            self.args,
            self.code,
            truncate_text(&String::from_utf8_lossy(&self.stdout)),
            truncate_text(&self.stderr)
        )
    }

    /// Asserts exit code 0 and returns the run.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.describe());
        self
    }

    /// Asserts the exit code and returns the run.
    #[track_caller]
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code,
            Some(expected),
            "expected exit code {expected}:\n{}",
            self.describe()
        );
        self
    }

    /// Asserts a non-zero exit (not a crash by signal) and returns the run.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(
            matches!(self.code, Some(code) if code != 0),
            "expected a non-zero exit:\n{}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "cairn panicked:\n{}",
            self.describe()
        );
        self
    }

    /// Asserts that standard error contains `needle`.
    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}:\n{}",
            self.describe()
        );
        self
    }

    /// Standard output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard output parsed as JSON lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| {
                    panic!("not JSON ({error}): {line}\n{}", self.describe())
                })
            })
            .collect()
    }

    /// The `"message_type": "summary"` line of a `--json` run.
    #[track_caller]
    pub fn summary(&self) -> serde_json::Value {
        self.json_lines()
            .into_iter()
            .rfind(|line| line["message_type"] == "summary")
            .unwrap_or_else(|| panic!("no summary line:\n{}", self.describe()))
    }
}

fn truncate_text(text: &str) -> String {
    const LIMIT: usize = 4000;
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Runs a prepared command, feeding `input` on standard input from a thread.
pub fn run_command(mut command: Command, input: Option<&[u8]>) -> Run {
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("cairn starts");
    let feeder = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("stdin piped");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            // cairn may exit early (an error) and close the pipe; that is the test's to judge.
            let _ = stdin.write_all(&bytes);
        })
    });
    let output = child.wait_with_output().expect("cairn runs");
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin feeder");
    }
    Run {
        args,
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A temporary directory with a repository location, a cache directory and a `cairn` runner.
pub struct Workspace {
    dir: tempfile::TempDir,
    /// The repository directory (created by `init`).
    pub repo: PathBuf,
    /// The cache directory.
    pub cache: PathBuf,
    /// Programs and arguments put before `cairn` (for example `setpriv` to drop privileges).
    pub prefix: Vec<OsString>,
}

impl Workspace {
    /// An empty workspace; the repository is not created.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("temp dir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Self {
            dir,
            repo,
            cache,
            prefix: Vec::new(),
        }
    }

    /// A workspace with a repository created with cheap key derivation and `extra` init options.
    pub fn initialized_with(extra: &[&str]) -> Self {
        let workspace = Self::new();
        let mut args: Vec<&str> = CHEAP_INIT.to_vec();
        args.extend_from_slice(extra);
        workspace.cairn(&args).ok();
        workspace
    }

    /// A workspace with a repository created with cheap key derivation.
    pub fn initialized() -> Self {
        Self::initialized_with(&[])
    }

    /// The workspace's root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path below the workspace root.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// A `cairn` command with the workspace's environment and `env` overrides.
    pub fn command(&self, args: &[&str], env: &[(&str, &Path)]) -> Command {
        let mut command = if self.prefix.is_empty() {
            Command::new(cairn_binary())
        } else {
            let mut command = Command::new(&self.prefix[0]);
            command.args(&self.prefix[1..]).arg(cairn_binary());
            command
        };
        command
            .args(args)
            .env("CAIRN_REPOSITORY", &self.repo)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env("RUST_BACKTRACE", "0");
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    /// Runs `cairn args...`.
    pub fn cairn(&self, args: &[&str]) -> Run {
        run_command(self.command(args, &[]), None)
    }

    /// Runs `cairn args...` with `input` on standard input.
    pub fn cairn_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        run_command(self.command(args, &[]), Some(input))
    }

    /// Runs `cairn args...` with environment overrides (for example another repository).
    pub fn cairn_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        run_command(self.command(args, env), None)
    }

    /// Runs `cairn args...` with the password replaced.
    pub fn cairn_password(&self, args: &[&str], password: &str) -> Run {
        let mut command = self.command(args, &[]);
        command.env("CAIRN_PASSWORD", password);
        run_command(command, None)
    }

    /// Runs `backup --json paths...` and returns the summary, asserting success.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args: Vec<String> = vec!["backup".into(), "--json".into()];
        args.extend(paths.iter().map(|path| path.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cairn(&args).ok().summary()
    }

    /// Runs `backup --json --stdin --stdin-name name extra...` fed with `data`, returns the
    /// summary, asserting success.
    #[track_caller]
    pub fn backup_stdin(&self, name: &str, data: &[u8], extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["backup", "--json", "--stdin", "--stdin-name", name];
        args.extend_from_slice(extra);
        self.cairn_stdin(&args, data).ok().summary()
    }

    /// The snapshots, from `snapshots --json`.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.cairn(&["snapshots", "--json"]).ok().json_lines()
    }

    /// The snapshots carrying `tag` (`source:db`), from `snapshots --json`, oldest first.
    #[track_caller]
    pub fn snapshots_tagged(&self, tag: &str) -> Vec<serde_json::Value> {
        self.snapshots()
            .into_iter()
            .filter(|snapshot| {
                snapshot["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|found| found == tag))
            })
            .collect()
    }

    /// Opens the repository through the library (in-memory cache).
    pub fn open_repository(&self) -> Repository {
        open_local_repository(&self.repo)
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// A runner of `cairn --repo <location> ...` in a workspace: the same commands against the
/// workspace's local directory or a prefix on a remote store.
pub struct Repo<'a> {
    /// Environment, cache and prefix of every run.
    pub workspace: &'a Workspace,
    /// The repository location given with `--repo`.
    pub location: String,
}

impl<'a> Repo<'a> {
    /// The workspace's own repository directory.
    pub fn local(workspace: &'a Workspace) -> Self {
        Self {
            location: workspace.repo.to_string_lossy().into_owned(),
            workspace,
        }
    }

    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut out = vec!["--repo", self.location.as_str()];
        out.extend_from_slice(args);
        out
    }

    /// Runs `cairn --repo <location> args...`.
    pub fn cairn(&self, args: &[&str]) -> Run {
        self.workspace.cairn(&self.args(args))
    }

    /// Starts `cairn --repo <location> args...` with piped output.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.workspace
            .command(&self.args(args), &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn starts")
    }
}

/// Milliseconds elapsed since `started`, at least `floor`: the span kill delays are drawn from.
pub fn elapsed_ms(started: Instant, floor: u64) -> u64 {
    u64::try_from(started.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(floor)
}

/// How a command run by [`kill_after`] ended.
#[derive(Debug)]
pub enum Ending {
    /// SIGKILL ended it mid-run.
    Killed,
    /// It had already completed, successfully; its standard output.
    Completed(Vec<u8>),
}

/// Lets `child` run for `delay` (or until it exits, if sooner), then sends it SIGKILL if it is
/// still running, and reaps it. A command that exits on its own must have succeeded: failing
/// by itself is a finding, not a crash.
#[track_caller]
pub fn kill_after(mut child: Child, delay: Duration) -> Ending {
    let deadline = Instant::now() + delay;
    while child.try_wait().expect("poll child").is_none() {
        let now = Instant::now();
        if now >= deadline {
            // It may exit between the poll and the kill; the status tells which came first.
            let _ = child.kill();
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
    }
    let output = child.wait_with_output().expect("reap child");
    if output.status.signal() == Some(9) {
        return Ending::Killed;
    }
    assert!(
        output.status.success(),
        "cairn failed on its own before the kill ({:?}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ending::Completed(output.stdout)
}

/// Opens a local repository through the library with an in-memory cache.
pub fn open_local_repository(path: &Path) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(
        ObjectStoreBackend::open(&path.to_string_lossy(), &[], CreateDirectory::No)
            .expect("open backend"),
    );
    let repository = Repository::open(backend, PASSWORD.as_bytes(), &CacheLocation::Memory)
        .expect("open repository");
    repository.sync_index().expect("sync index");
    repository
}

/// A JSON number as `u64`.
#[track_caller]
pub fn json_u64(value: &serde_json::Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field:?} is not a number in {value}"))
}

/// The effective user id of this process (from `/proc/self/status`).
pub fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .expect("Uid line")
}

/// A command prefix that runs a program as an unprivileged user, so that permission bits are
/// honoured: `setpriv` to `nobody` when running as root, nothing otherwise.
pub fn unprivileged_prefix() -> Vec<OsString> {
    if effective_uid() != 0 {
        return Vec::new();
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("running as root: setpriv is needed to drop privileges for permission tests");
    [
        setpriv,
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// A tmpfs of `size` mounted on a directory, unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl Tmpfs {
    /// Mounts it, or `None` (with a note that `purpose` is skipped) where a tmpfs cannot be
    /// mounted: not root, or no `CAP_SYS_ADMIN` in this container.
    pub fn mount(mount_point: PathBuf, size: &str, purpose: &str) -> Option<Self> {
        if effective_uid() != 0 {
            eprintln!("skipping {purpose}: mounting a tmpfs needs root");
            return None;
        }
        fs::create_dir_all(&mount_point).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .status();
        if !status.as_ref().is_ok_and(std::process::ExitStatus::success) {
            eprintln!("skipping {purpose}: mount -t tmpfs failed ({status:?})");
            return None;
        }
        Some(Self { mount_point })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

/// Changes the owner of `path` and everything below it (not following symlinks).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if fs::symlink_metadata(path).expect("metadata").is_dir() {
        for entry in fs::read_dir(path).expect("list") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------------------

/// A small, fast, seeded generator (`SplitMix64`): the same seed always yields the same bytes.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5eed_cafe_f00d_d00d)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next_u64() % bound as u64).expect("fits")
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let length = tail.len();
        tail.copy_from_slice(&last[..length]);
    }
}

/// `length` incompressible bytes determined by `seed`.
pub fn random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut out = vec![0u8; length];
    Prng::new(seed).fill(&mut out);
    out
}

const WORDS: [&str; 48] = [
    "backup",
    "restore",
    "chunk",
    "pack",
    "index",
    "snapshot",
    "tree",
    "blob",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "was",
    "on",
    "server",
    "database",
    "request",
    "latency",
    "error",
    "warning",
    "info",
    "debug",
    "user",
    "session",
    "token",
    "config",
    "value",
    "cluster",
    "replica",
    "shard",
    "primary",
    "secondary",
    "disk",
    "memory",
    "cpu",
    "network",
    "timeout",
    "retry",
    "commit",
    "rollback",
];

/// `length` bytes of log-like text (compresses several times) determined by `seed`.
pub fn compressible_text(seed: u64, length: usize) -> Vec<u8> {
    let mut prng = Prng::new(seed);
    let mut out = Vec::with_capacity(length + 128);
    let mut line = 0u64;
    while out.len() < length {
        line += 1;
        let level = ["INFO", "WARN", "DEBUG", "ERROR"][prng.below(4)];
        write!(
            out,
            "2026-01-{:02}T{:02}:{:02}:{:02}Z {level} [worker-{}] line {line}:",
            1 + prng.below(28),
            prng.below(24),
            prng.below(60),
            prng.below(60),
            prng.below(16)
        )
        .expect("write to vec");
        for _ in 0..(4 + prng.below(12)) {
            out.push(b' ');
            out.extend_from_slice(WORDS[prng.below(WORDS.len())].as_bytes());
        }
        out.push(b'\n');
    }
    out.truncate(length);
    out
}

/// A minimal BSON document writer (the subset a mongodump archive needs).
#[derive(Debug, Default)]
pub struct Bson {
    elements: Vec<u8>,
}

impl Bson {
    fn name(&mut self, kind: u8, name: &str) -> &mut Self {
        self.elements.push(kind);
        self.elements.extend_from_slice(name.as_bytes());
        self.elements.push(0);
        self
    }

    /// A UTF-8 string field.
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(0x02, name);
        let length = u32::try_from(value.len() + 1).expect("short string");
        self.elements.extend_from_slice(&length.to_le_bytes());
        self.elements.extend_from_slice(value.as_bytes());
        self.elements.push(0);
        self
    }

    /// A 32-bit integer field.
    pub fn int32(&mut self, name: &str, value: i32) -> &mut Self {
        self.name(0x10, name);
        self.elements.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A 64-bit integer field.
    pub fn int64(&mut self, name: &str, value: i64) -> &mut Self {
        self.name(0x12, name);
        self.elements.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A UTC datetime field (milliseconds).
    pub fn datetime(&mut self, name: &str, millis: i64) -> &mut Self {
        self.name(0x09, name);
        self.elements.extend_from_slice(&millis.to_le_bytes());
        self
    }

    /// A double field.
    pub fn double(&mut self, name: &str, value: f64) -> &mut Self {
        self.name(0x01, name);
        self.elements.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A boolean field.
    pub fn boolean(&mut self, name: &str, value: bool) -> &mut Self {
        self.name(0x08, name);
        self.elements.push(u8::from(value));
        self
    }

    /// A 12-byte object id field.
    pub fn object_id(&mut self, name: &str, value: [u8; 12]) -> &mut Self {
        self.name(0x07, name);
        self.elements.extend_from_slice(&value);
        self
    }

    /// A generic binary field.
    pub fn binary(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.name(0x05, name);
        let length = u32::try_from(value.len()).expect("short binary");
        self.elements.extend_from_slice(&length.to_le_bytes());
        self.elements.push(0x00);
        self.elements.extend_from_slice(value);
        self
    }

    /// An embedded document field.
    pub fn document(&mut self, name: &str, value: &Bson) -> &mut Self {
        self.name(0x03, name);
        self.elements.extend_from_slice(&value.to_bytes());
        self
    }

    /// The encoded document: `length i32 || elements || 0`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let length = u32::try_from(self.elements.len() + 5).expect("short document");
        let mut out = Vec::with_capacity(self.elements.len() + 5);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&self.elements);
        out.push(0);
        out
    }
}

/// A mongodump `--archive`-like stream: magic, a header document, collection metadata, then
/// namespace blocks of BSON documents (some with incompressible binary payloads) separated by
/// terminators.
#[derive(Debug, Clone)]
pub struct MongoArchive {
    prelude: Vec<u8>,
    /// `(namespace header, document indices)` blocks.
    blocks: Vec<(Vec<u8>, Vec<usize>)>,
    documents: Vec<Vec<u8>>,
    seed: u64,
}

fn namespace_header(database: &str, collection: &str, eof: bool) -> Vec<u8> {
    Bson::default()
        .string("db", database)
        .string("collection", collection)
        .boolean("EOF", eof)
        .int64("CRC", 0)
        .to_bytes()
}

impl MongoArchive {
    /// An archive of `documents` documents over three collections, determined by `seed`.
    pub fn generate(seed: u64, documents: usize) -> Self {
        let mut prelude = 0x8199_e26d_u32.to_le_bytes().to_vec();
        prelude.extend_from_slice(
            &Bson::default()
                .int32("concurrent_collections", 4)
                .string("version", "0.1")
                .string("server", "7.0.14")
                .string("tool", "100.9.4")
                .to_bytes(),
        );
        let collections = ["users", "orders", "attachments"];
        for collection in collections {
            let mut metadata = Bson::default();
            metadata
                .string("db", "shop")
                .string("collection", collection)
                .string(
                    "metadata",
                    &format!(
                        "{{\"indexes\":[{{\"v\":2,\"key\":{{\"_id\":1}},\"name\":\"_id_\"}}],\"uuid\":\"{seed:016x}{collection}\"}}"
                    ),
                )
                .int32("size", 0)
                .string("type", "collection");
            prelude.extend_from_slice(&metadata.to_bytes());
        }
        prelude.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut archive = Self {
            prelude,
            blocks: Vec::new(),
            documents: Vec::with_capacity(documents),
            seed,
        };
        for index in 0..documents {
            let document = archive.document(index, 0);
            archive.documents.push(document);
        }
        let per_collection: Vec<Vec<usize>> = (0..collections.len())
            .map(|which| (which..documents).step_by(collections.len()).collect())
            .collect();
        // Interleave in blocks of a few documents, as the concurrent dumper does.
        let mut cursors = vec![0usize; collections.len()];
        let mut prng = Prng::new(seed ^ 0xb10c);
        loop {
            let mut progressed = false;
            for (which, indices) in per_collection.iter().enumerate() {
                if cursors[which] >= indices.len() {
                    continue;
                }
                let take = (1 + prng.below(40)).min(indices.len() - cursors[which]);
                let block = indices[cursors[which]..cursors[which] + take].to_vec();
                cursors[which] += take;
                archive
                    .blocks
                    .push((namespace_header("shop", collections[which], false), block));
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        for collection in collections {
            archive
                .blocks
                .push((namespace_header("shop", collection, true), Vec::new()));
        }
        archive
    }

    /// Document `index` in revision `revision`. Revisions differ in some field values and in
    /// the payload, never in length, so a new revision replaces a document in place.
    fn document(&self, index: usize, revision: u32) -> Vec<u8> {
        let mut prng = Prng::new(self.seed.wrapping_mul(31).wrapping_add(index as u64));
        let mut id = [0u8; 12];
        prng.fill(&mut id);
        let first = WORDS[prng.below(WORDS.len())];
        let last = WORDS[prng.below(WORDS.len())];
        let mut address = Bson::default();
        address
            .string("street", &format!("{} {} street", prng.below(999), last))
            .string("city", WORDS[prng.below(WORDS.len())])
            .int32("zip", small_i32(prng.below(99_999)));
        let balance = f64::from(small_i32(prng.below(1_000_000))) / 100.0;
        let updated = 1_767_225_600_000 + i64::from(small_i32(prng.below(1 << 30)));
        let mut document = Bson::default();
        document
            .object_id("_id", id)
            .string("name", &format!("{first} {last}"))
            .string("email", &format!("{first}.{last}.{index}@example.com"))
            .int32("age", small_i32(18 + prng.below(70)))
            .double("balance", balance + f64::from(revision))
            .datetime("updated", updated + i64::from(revision) * 1000)
            .int32("revision", i32::try_from(revision).expect("small"))
            .document("address", &address);
        let notes_length = 200 + prng.below(1500);
        let notes = compressible_text(prng.next_u64() ^ u64::from(revision), notes_length);
        document.string("notes", &String::from_utf8_lossy(&notes));
        let payload_seed = prng.next_u64() ^ (u64::from(revision) << 32);
        if index.is_multiple_of(5) {
            let payload_length = 2048 + prng.below(14 * 1024);
            document.binary("attachment", &random_bytes(payload_seed, payload_length));
        }
        document.to_bytes()
    }

    /// Replaces `count` documents, chosen by `seed`, with a new revision of the same length;
    /// every other byte of the archive stays where it was. Returns the documents' indices.
    pub fn modify_documents(&mut self, seed: u64, count: usize) -> Vec<usize> {
        let mut prng = Prng::new(seed);
        let mut changed = Vec::new();
        for _ in 0..count {
            let index = prng.below(self.documents.len());
            let revision = 1 + u32::try_from(prng.below(1000)).expect("small");
            let replacement = self.document(index, revision);
            assert_eq!(replacement.len(), self.documents[index].len(), "in place");
            self.documents[index] = replacement;
            changed.push(index);
        }
        changed
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.prelude.clone();
        for (header, indices) in &self.blocks {
            out.extend_from_slice(header);
            for &index in indices {
                out.extend_from_slice(&self.documents[index]);
            }
            out.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        out
    }
}

fn small_i32(value: usize) -> i32 {
    i32::try_from(value).expect("small number")
}

/// A hand-built ustar archive writer.
#[derive(Debug, Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() <= digits,
        "value {value} too large for a tar field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

impl TarWriter {
    fn header(&mut self, name: &str, mode: u32, size: u64, mtime: u64, kind: u8) {
        assert!(name.len() <= 100, "tar name too long: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], size);
        octal(&mut header[136..148], mtime);
        header[148..156].copy_from_slice(b"        ");
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root");
        header[297..301].copy_from_slice(b"root");
        let checksum: u64 = header.iter().map(|&byte| u64::from(byte)).sum();
        let text = format!("{checksum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        self.out.extend_from_slice(&header);
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, mode: u32, mtime: u64, data: &[u8]) -> &mut Self {
        self.header(name, mode, data.len() as u64, mtime, b'0');
        self.out.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, padding));
        self
    }

    /// Adds a directory.
    pub fn directory(&mut self, name: &str, mtime: u64) -> &mut Self {
        self.header(name, 0o755, 0, mtime, b'5');
        self
    }

    /// The archive with its two terminating zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

/// A `docker save`-like tar: `manifest.json`, `repositories`, an image config and `layers`
/// layer directories each holding a `layer.tar` (itself a tar of binaries and text files of
/// about `layer_size` bytes), all determined by `seed`.
pub fn docker_save_tar(seed: u64, layers: usize, layer_size: usize) -> Vec<u8> {
    let mut prng = Prng::new(seed);
    let mtime = 1_767_225_600;
    let mut layer_ids = Vec::new();
    let mut outer = TarWriter::default();
    for layer in 0..layers {
        let mut inner = TarWriter::default();
        inner.directory("usr/", mtime).directory("usr/bin/", mtime);
        let binary = random_bytes(prng.next_u64(), layer_size / 2);
        inner.file(&format!("usr/bin/tool-{layer}"), 0o755, mtime, &binary);
        inner.directory("etc/", mtime);
        let text = compressible_text(prng.next_u64(), layer_size / 4);
        inner.file(&format!("etc/app-{layer}.conf"), 0o644, mtime, &text);
        inner
            .directory("usr/share/", mtime)
            .directory("usr/share/doc/", mtime);
        let docs = compressible_text(prng.next_u64(), layer_size / 4);
        inner.file(
            &format!("usr/share/doc/README-{layer}"),
            0o644,
            mtime,
            &docs,
        );
        let layer_tar = inner.finish();
        let id = blake3::hash(&layer_tar).to_hex().to_string();
        outer.directory(&format!("{id}/"), mtime);
        outer.file(&format!("{id}/VERSION"), 0o644, mtime, b"1.0");
        let json =
            format!("{{\"id\":\"{id}\",\"created\":\"2026-01-01T00:00:00Z\",\"os\":\"linux\"}}");
        outer.file(&format!("{id}/json"), 0o644, mtime, json.as_bytes());
        outer.file(&format!("{id}/layer.tar"), 0o644, mtime, &layer_tar);
        layer_ids.push(id);
    }
    let layer_list: Vec<String> = layer_ids
        .iter()
        .map(|id| format!("\"{id}/layer.tar\""))
        .collect();
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
        layer_ids
            .iter()
            .map(|id| format!("\"sha256:{id}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let config_id = blake3::hash(config.as_bytes()).to_hex().to_string();
    outer.file(
        &format!("{config_id}.json"),
        0o644,
        mtime,
        config.as_bytes(),
    );
    let manifest = format!(
        "[{{\"Config\":\"{config_id}.json\",\"RepoTags\":[\"registry.example/app:1.2.3\"],\"Layers\":[{}]}}]",
        layer_list.join(",")
    );
    outer.file("manifest.json", 0o644, mtime, manifest.as_bytes());
    let repositories = format!(
        "{{\"registry.example/app\":{{\"1.2.3\":\"{}\"}}}}",
        layer_ids.last().cloned().unwrap_or_default()
    );
    outer.file("repositories", 0o644, mtime, repositories.as_bytes());
    outer.finish()
}

// ---------------------------------------------------------------------------------------------
// File trees
// ---------------------------------------------------------------------------------------------

/// Builds a file tree below a root directory.
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    root: PathBuf,
}

impl TreeBuilder {
    /// A builder for `root`, which is created.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        fs::create_dir_all(&root).expect("create tree root");
        Self { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `relative`.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Writes a file (creating its parents).
    pub fn file(&self, relative: &str, data: &[u8]) -> PathBuf {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parents");
        }
        fs::write(&path, data).expect("write file");
        path
    }

    /// Creates a directory (and its parents).
    pub fn dir(&self, relative: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(&path).expect("create directory");
        path
    }

    /// Creates a symbolic link to `target` (which need not exist).
    pub fn symlink(&self, relative: &str, target: &str) -> PathBuf {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parents");
        }
        std::os::unix::fs::symlink(target, &path).expect("create symlink");
        path
    }

    /// Sets permission bits.
    pub fn mode(&self, relative: &str, mode: u32) -> &Self {
        fs::set_permissions(self.path(relative), fs::Permissions::from_mode(mode))
            .expect("set permissions");
        self
    }

    /// Sets the modification (and access) time of a file or directory (seconds may be
    /// negative: before 1970).
    pub fn mtime(&self, relative: &str, seconds: i64, nanos: u32) -> &Self {
        set_mtime(&self.path(relative), seconds, nanos);
        self
    }
}

/// Sets the modification (and access) time of a file or directory to `seconds` (negative:
/// before 1970) plus `nanos`.
pub fn set_mtime(path: &Path, seconds: i64, nanos: u32) {
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let time = if seconds >= 0 {
        SystemTime::UNIX_EPOCH + whole
    } else {
        SystemTime::UNIX_EPOCH - whole
    } + Duration::from_nanos(u64::from(nanos));
    File::open(path)
        .expect("open for times")
        .set_times(FileTimes::new().set_modified(time).set_accessed(time))
        .expect("set times");
}

/// What an entry of a scanned tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: its length and BLAKE3 hash.
    File {
        /// Length in bytes.
        length: u64,
        /// BLAKE3 of the content, hex.
        hash: String,
    },
    /// A directory.
    Directory,
    /// A symbolic link and its target.
    Symlink(PathBuf),
}

/// One entry of a scanned tree: kind, permission bits and modification time (not for symlinks,
/// whose own metadata is not restored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kind and content.
    pub kind: EntryKind,
    /// Permission bits (`& 0o7777`), `None` for symlinks.
    pub mode: Option<u32>,
    /// Modification time (seconds, nanoseconds), `None` for symlinks.
    pub mtime: Option<(i64, i64)>,
}

/// Every entry below `root` (and `root` itself, as the empty path), by relative path.
pub fn scan_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let metadata = fs::symlink_metadata(path)
            .unwrap_or_else(|error| panic!("metadata of {}: {error}", path.display()));
        let relative = path.strip_prefix(root).expect("below root").to_owned();
        let file_type = metadata.file_type();
        let mut entry = Entry {
            kind: EntryKind::Directory,
            mode: Some(metadata.mode() & 0o7777),
            mtime: Some((metadata.mtime(), metadata.mtime_nsec())),
        };
        if file_type.is_symlink() {
            entry.kind = EntryKind::Symlink(fs::read_link(path).expect("read link"));
            entry.mode = None;
            entry.mtime = None;
        } else if file_type.is_file() {
            let bytes =
                fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
            entry.kind = EntryKind::File {
                length: bytes.len() as u64,
                hash: blake3::hash(&bytes).to_hex().to_string(),
            };
        } else if file_type.is_dir() {
            for child in fs::read_dir(path).expect("list directory") {
                walk(root, &child.expect("entry").path(), out);
            }
        } else {
            panic!("unexpected file type at {}", path.display());
        }
        out.insert(relative, entry);
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that two scanned trees are equal, naming the first differences.
#[track_caller]
pub fn assert_same_entries(expected: &BTreeMap<PathBuf, Entry>, actual: &BTreeMap<PathBuf, Entry>) {
    let mut problems = Vec::new();
    for (path, entry) in expected {
        match actual.get(path) {
            None => problems.push(format!("missing: {}", path.display())),
            Some(found) if found != entry => problems.push(format!(
                "differs: {}\n    expected {entry:?}\n    found    {found:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) {
            problems.push(format!("unexpected: {}", path.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "trees differ ({} problems):\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Asserts that the trees below two roots are equal (content, modes, mtimes, symlink targets).
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    assert_same_entries(&scan_tree(expected), &scan_tree(actual));
}

/// Where a restore of the whole snapshot puts an absolute source path below `target`.
pub fn restored_path(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source path"))
}

// ---------------------------------------------------------------------------------------------
// Repository directories
// ---------------------------------------------------------------------------------------------

/// Every regular file below `directory`, sorted.
pub fn files_below(directory: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![directory.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(listing) = fs::read_dir(&path) else {
            continue;
        };
        for entry in listing {
            let entry = entry.expect("entry");
            let file_type = entry.file_type().expect("file type");
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Relative path → (size, BLAKE3) of every file below `directory`: equal listings mean
/// byte-identical contents.
pub fn listing(directory: &Path) -> BTreeMap<PathBuf, (u64, String)> {
    files_below(directory)
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).expect("read");
            (
                path.strip_prefix(directory).expect("below").to_owned(),
                (
                    bytes.len() as u64,
                    blake3::hash(&bytes).to_hex().to_string(),
                ),
            )
        })
        .collect()
}

/// The objects below `prefix` of a repository (`data`, `index`, `snapshots`, `keys`).
pub fn objects(repo: &Path, prefix: &str) -> Vec<PathBuf> {
    files_below(&repo.join(prefix))
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// XORs the byte at `offset` of a file with `0x01` (a negative offset counts from the end).
pub fn flip_byte(path: &Path, offset: i64) {
    let mut bytes = fs::read(path).expect("read");
    let length = i64::try_from(bytes.len()).expect("small file");
    let position = if offset < 0 { length + offset } else { offset };
    let position = usize::try_from(position).expect("offset inside the file");
    bytes[position] ^= 0x01;
    fs::write(path, bytes).expect("write");
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let first = needle[0];
    let Some(last_start) = haystack.len().checked_sub(needle.len()) else {
        return false;
    };
    let mut start = 0;
    while start <= last_start {
        match haystack[start..=last_start]
            .iter()
            .position(|&byte| byte == first)
        {
            None => return false,
            Some(found) => {
                let at = start + found;
                if &haystack[at..at + needle.len()] == needle {
                    return true;
                }
                start = at + 1;
            }
        }
    }
    false
}

/// The file name (the hex id) of an object path.
pub fn object_id(path: &Path) -> String {
    path.file_name()
        .expect("object file name")
        .to_string_lossy()
        .into_owned()
}

/// The paths of the latest snapshot below `root`, relative to it.
pub fn listed_below(workspace: &Workspace, root: &Path) -> std::collections::BTreeSet<String> {
    let prefix = format!("{}/", root.display());
    workspace
        .cairn(&["ls", "--json", "latest"])
        .ok()
        .json_lines()
        .iter()
        .filter_map(|entry| {
            entry["path"]
                .as_str()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect()
}
