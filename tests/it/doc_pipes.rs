//! Every shell pipe in README.md, docs/ and contrib/ either runs under `set -o pipefail` or says
//! on its line (or in the comment line just above) why it is safe without it: a comment that
//! mentions `pipefail`. Without pipefail, `cairn dump latest db.archive | psql` or
//! `head -c 32 /dev/urandom | base64 > password` reports success when the left side failed.
//! Scanned: fenced shell blocks (`sh`, `bash`, `shell`, `console`, or no language) and the
//! strings of fenced `toml` blocks in the Markdown files (cairn runs `command`, `restore` and
//! hooks with `sh -c`), and `contrib/*.sh`, `contrib/*.cron`, `contrib/*.toml` whole.

use std::fs;
use std::path::{Path, PathBuf};

/// How a text holds shell code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Shell lines.
    Shell,
    /// TOML whose strings are shell commands.
    Toml,
}

/// A pipe that neither runs under pipefail nor says why it is safe.
#[derive(Debug, PartialEq, Eq)]
struct Unsafe {
    line: usize,
    text: String,
}

/// Splits a shell line into its code and its comment, and says whether the code has a pipe
/// (`|` outside quotes, not `||`).
fn shell_pipe_and_comment(line: &str) -> (bool, &str) {
    let bytes = line.as_bytes();
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut pipe = false;
    for (position, &byte) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' if !single => escaped = true,
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single
                && !double
                && (position == 0 || bytes[position - 1].is_ascii_whitespace()) =>
            {
                return (pipe, &line[position..]);
            }
            b'|' if !single && !double => {
                let doubled = bytes.get(position + 1) == Some(&b'|')
                    || (position > 0 && bytes[position - 1] == b'|');
                pipe |= !doubled;
            }
            _ => {}
        }
    }
    (pipe, "")
}

/// The double-quoted strings of a TOML line (outside its comment), unescaped enough to scan.
fn toml_strings(line: &str) -> (Vec<String>, &str) {
    let mut strings = Vec::new();
    let mut current: Option<String> = None;
    let mut escaped = false;
    for (position, character) in line.char_indices() {
        match current.as_mut() {
            Some(text) if escaped => {
                text.push(character);
                escaped = false;
            }
            Some(_) if character == '\\' => escaped = true,
            Some(_) if character == '"' => strings.extend(current.take()),
            Some(text) => text.push(character),
            None if character == '"' => current = Some(String::new()),
            None if character == '#' => return (strings, &line[position..]),
            None => {}
        }
    }
    (strings, "")
}

/// Whether a line turns pipefail on for what follows.
fn sets_pipefail(line: &str) -> bool {
    let code = line.trim_start();
    code.starts_with("set ") && code.contains("pipefail") && !code.contains("+o pipefail")
}

/// The pipes of `text` that neither follow a `set -o pipefail` nor carry a comment (on their
/// line or the comment line just above) that mentions pipefail. Lines are numbered from
/// `first_line`.
fn unsafe_pipes(text: &str, kind: Kind, first_line: usize) -> Vec<Unsafe> {
    let mut found = Vec::new();
    let mut pipefail = false;
    let mut previous_comment = String::new();
    for (offset, line) in text.lines().enumerate() {
        let (pipe, comment) = match kind {
            Kind::Shell => shell_pipe_and_comment(line),
            Kind::Toml => {
                let (strings, comment) = toml_strings(line);
                let pipe = strings.iter().any(|command| {
                    let (pipe, _) = shell_pipe_and_comment(command);
                    pipe && !sets_pipefail_inline(command)
                });
                (pipe, comment)
            }
        };
        if kind == Kind::Shell && sets_pipefail(line) {
            pipefail = true;
        }
        let justified = comment.contains("pipefail") || previous_comment.contains("pipefail");
        if pipe && !pipefail && !justified {
            found.push(Unsafe {
                line: first_line + offset,
                text: line.trim().to_owned(),
            });
        }
        previous_comment = if line.trim_start().starts_with('#') {
            line.to_owned()
        } else {
            String::new()
        };
    }
    found
}

/// Whether a one-line command sets pipefail before its pipe (`set -o pipefail; a | b`).
fn sets_pipefail_inline(command: &str) -> bool {
    command.split(';').next().is_some_and(sets_pipefail)
}

/// The shell and TOML blocks of a Markdown text: kind, first line number, text.
fn markdown_blocks(markdown: &str) -> Vec<(Kind, usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(Option<Kind>, usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(language)) => {
                let kind = match language.trim() {
                    "" | "sh" | "bash" | "shell" | "console" | "zsh" => Some(Kind::Shell),
                    "toml" => Some(Kind::Toml),
                    _ => None,
                };
                open = Some((kind, index + 2, String::new()));
            }
            (Some(_), Some(_)) => {
                if let Some((Some(kind), first, text)) = open.take() {
                    blocks.push((kind, first, text));
                }
            }
            (Some((_, _, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files_in(directory: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)
        .expect("directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extensions.iter().any(|wanted| extension == *wanted))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_pipe_in_the_docs_and_contrib_runs_under_pipefail_or_says_why_not() {
    let root = repository_root();
    let mut problems = Vec::new();
    let mut blocks_scanned = 0;
    let mut markdown = vec![root.join("README.md")];
    markdown.extend(files_in(&root.join("docs"), &["md"]));
    for path in &markdown {
        let text = fs::read_to_string(path).expect("read");
        for (kind, first, block) in markdown_blocks(&text) {
            blocks_scanned += 1;
            for found in unsafe_pipes(&block, kind, first) {
                problems.push(format!("{}:{}: {}", path.display(), found.line, found.text));
            }
        }
    }
    for path in files_in(&root.join("contrib"), &["sh", "cron", "toml"]) {
        let text = fs::read_to_string(&path).expect("read");
        let kind = if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            Kind::Toml
        } else {
            Kind::Shell
        };
        blocks_scanned += 1;
        for found in unsafe_pipes(&text, kind, 1) {
            problems.push(format!("{}:{}: {}", path.display(), found.line, found.text));
        }
    }
    assert!(blocks_scanned > 20, "only {blocks_scanned} blocks found");
    assert!(
        problems.is_empty(),
        "pipes without `set -o pipefail` before them or a comment saying why pipefail is not \
         needed:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_finds_unsafe_pipes_and_accepts_pipefail_and_reasons() {
    let shell = "cairn init\n\
                 cairn dump latest db.sql | psql shop\n\
                 jq -r 'select(.a) | .b' file\n\
                 cairn run || logger failed\n\
                 echo \"a | b\"\n\
                 cairn man | man -l -   # no pipefail needed: interactive\n\
                 # no pipefail needed: tail only shows\n\
                 cairn snapshots | tail\n\
                 echo x \\| y\n\
                 set -o pipefail\n\
                 head -c 32 /dev/urandom | base64 > password\n";
    assert_eq!(
        unsafe_pipes(shell, Kind::Shell, 10),
        [Unsafe {
            line: 11,
            text: "cairn dump latest db.sql | psql shop".into(),
        }]
    );
    assert!(unsafe_pipes("set -euo pipefail\na | b\n", Kind::Shell, 1).is_empty());
    assert_eq!(
        unsafe_pipes("set +o pipefail\na | b\n", Kind::Shell, 1).len(),
        1
    );
    let toml = "[sources.db]\n\
                command = \"pg_dump shop | gzip\"\n\
                restore = \"psql shop\"   # a | in a comment\n\
                before = [\"echo a || true\", \"sync | cat\"]\n\
                after = [\"set -o pipefail; a | b\"]\n\
                on_failure = [\"x | y\"]   # no pipefail needed: logger reads it all\n";
    let found: Vec<usize> = unsafe_pipes(toml, Kind::Toml, 1)
        .iter()
        .map(|found| found.line)
        .collect();
    assert_eq!(found, [2, 4]);
    let markdown = "text\n```sh\na | b\n```\n```yaml\nx: a | b\n```\n```toml\nc = \"d | e\"\n```\n";
    let blocks = markdown_blocks(markdown);
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].0, blocks[0].1), (Kind::Shell, 3));
    assert_eq!(
        unsafe_pipes(&blocks[0].2, blocks[0].0, blocks[0].1)[0].line,
        3
    );
    assert_eq!(
        unsafe_pipes(&blocks[1].2, blocks[1].0, blocks[1].1)[0].line,
        9
    );
}
