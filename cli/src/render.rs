//! Rendering helpers shared by commands: times, sizes, JSON lines.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_store::format::tree::Timestamp;

/// Set once standard output cannot take more (a closed pipe, as in `cairn snapshots | head -1`,
/// or a failed write): later output is dropped and the command finishes as it would have.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when standard output failed for another reason than a closed pipe (a full disk behind a
/// redirect): the command then exits 1.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes command output to standard output without ever panicking (what `println!` does on a
/// closed pipe). A reader that went away (`| head`) is normal: the rest of the output is
/// dropped quietly. Any other failure is said once on stderr and makes the exit code 1 (see
/// [`stdout_failed`]). Used through the `outln!` and `out!` macros.
pub fn print_out(text: std::fmt::Arguments<'_>) {
    write_out_with(|stdout| stdout.write_fmt(text));
}

/// Writes bytes of command output (a generated completion script or man page) the way
/// [`print_out`] writes text.
pub fn write_out(bytes: &[u8]) {
    write_out_with(|stdout| stdout.write_all(bytes).and_then(|()| stdout.flush()));
}

fn write_out_with(write: impl FnOnce(&mut std::io::StdoutLock<'_>) -> std::io::Result<()>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = write(&mut stdout) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            eprintln!("cairn: cannot write to standard output: {error}");
        }
    }
}

/// Whether writing to standard output failed other than by a closed pipe.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// A snapshot or file time in the local time zone, `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(timestamp: Timestamp) -> String {
    jiff::Timestamp::new(
        timestamp.seconds,
        i32::try_from(timestamp.nanos).unwrap_or(0),
    )
    .map_or_else(
        |_| format!("@{}", timestamp.seconds),
        |time| {
            time.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// A stored time as a `jiff` timestamp (saturating at jiff's range).
pub fn jiff_time(timestamp: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::new(
        timestamp.seconds,
        i32::try_from(timestamp.nanos).unwrap_or(0),
    )
    .unwrap_or(if timestamp.seconds < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    })
}

/// An RFC 3339 UTC time for JSON.
pub fn rfc3339(timestamp: Timestamp) -> String {
    jiff::Timestamp::new(
        timestamp.seconds,
        i32::try_from(timestamp.nanos).unwrap_or(0),
    )
    .map(|time| time.to_string())
    .unwrap_or_default()
}

/// A byte count in binary units.
#[allow(clippy::cast_precision_loss)]
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// A duration as `2 d 3 h`, `4 h 5 min`, `6 min 7 s` or `8.9 s`.
pub fn span(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{:.1} s", duration.as_secs_f64()),
        60..3_600 => format!("{} min {} s", seconds / 60, seconds % 60),
        3_600..86_400 => format!("{} h {} min", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{} d {} h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// A share as a percentage without floating-point noise: 0.07 → `7`, 0.025 → `2.5`.
pub fn percent(fraction: f64) -> f64 {
    (fraction * 100.0 * 1e6).round() / 1e6
}

/// Prints one JSON object as a line on stdout.
pub fn json_line(value: &serde_json::Value) {
    outln!("{value}");
}

/// Request counts as a JSON object (for summaries that carry them).
pub fn requests_json(stats: &cairn_store::backend::RequestStats) -> serde_json::Value {
    serde_json::json!({
        "put": stats.puts, "get": stats.gets, "list": stats.lists,
        "head": stats.heads, "delete": stats.deletes,
        "bytes_sent": stats.bytes_sent, "bytes_received": stats.bytes_received,
    })
}

/// Reports the requests a run made: one JSON line with `--json`, else a line on stderr.
pub fn requests(json: bool, stats: &cairn_store::backend::RequestStats) {
    if json {
        json_line(&serde_json::json!({
            "message_type": "requests",
            "put": stats.puts, "get": stats.gets, "list": stats.lists,
            "head": stats.heads, "delete": stats.deletes,
            "bytes_sent": stats.bytes_sent, "bytes_received": stats.bytes_received,
        }));
    } else {
        eprintln!(
            "requests: {} PUT, {} GET, {} LIST, {} HEAD, {} DELETE; {} sent, {} received",
            stats.puts,
            stats.gets,
            stats.lists,
            stats.heads,
            stats.deletes,
            bytes(stats.bytes_sent),
            bytes(stats.bytes_received)
        );
    }
}

/// Reports the backup pipeline's per-stage times (`CAIRN_PIPELINE_STATS=1`): one JSON line with
/// `--json`, else one line on stderr, seconds with millisecond precision.
pub fn pipeline_stats(
    json: bool,
    totals: &[(cairn_store::pipeline_stats::Stage, std::time::Duration)],
    (probed_bytes, probe_raw_bytes): (u64, u64),
) {
    if json {
        let mut line = serde_json::Map::new();
        line.insert("message_type".into(), "pipeline_stats".into());
        for (stage, time) in totals {
            line.insert(stage.name().into(), time.as_secs_f64().into());
        }
        line.insert("probed_bytes".into(), probed_bytes.into());
        line.insert("probe_raw_bytes".into(), probe_raw_bytes.into());
        json_line(&serde_json::Value::Object(line));
    } else {
        let stages: Vec<String> = totals
            .iter()
            .map(|(stage, time)| format!("{} {:.3}", stage.name(), time.as_secs_f64()))
            .collect();
        eprintln!(
            "pipeline seconds: {}; probe stored {} of {} raw",
            stages.join(", "),
            bytes(probe_raw_bytes),
            bytes(probed_bytes)
        );
    }
}

/// The `type` of a snapshot entry in listings: `file`, `dir`, `symlink`, `fifo`, `chardev` or
/// `blockdev`.
pub fn node_type(node: &cairn_store::format::tree::Node) -> &'static str {
    use cairn_store::format::tree::{DeviceKind, NodeKind};
    match node.kind {
        NodeKind::File { .. } => "file",
        NodeKind::Directory { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Device {
            kind: DeviceKind::Character,
            ..
        } => "chardev",
        NodeKind::Device {
            kind: DeviceKind::Block,
            ..
        } => "blockdev",
    }
}

/// `ls -l` style mode string for a `st_mode`: the type character (`-`, `d`, `l`, `p` FIFO, `c`
/// character device, `b` block device, `s` socket, `?` unknown), then `rwx` for user, group and
/// others, with setuid and setgid shown as `s` (`S` when the execute bit is off) in the user's
/// and group's execute place, and the sticky bit as `t` (`T`) in the others'.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o100_000 => '-',
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o010_000 => 'p',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o140_000 => 's',
        _ => '?',
    };
    // (shift of the rwx triple, special bit shown in its execute place, its letter)
    let triples = [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')];
    let mut out = String::from(kind);
    for (shift, special, letter) in triples {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let execute = bits & 1 != 0;
        out.push(match (mode & special != 0, execute) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// The `st_mode` a listing shows for a snapshot entry: its stored permission bits under the
/// file type its kind says (stored modes carry the type too, but the kind is what restore
/// creates, so the two never disagree on screen).
pub fn node_mode(node: &cairn_store::format::tree::Node) -> u32 {
    use cairn_store::format::tree::{DeviceKind, NodeKind};
    let file_type = match node.kind {
        NodeKind::File { .. } => 0o100_000,
        NodeKind::Directory { .. } => 0o040_000,
        NodeKind::Symlink { .. } => 0o120_000,
        NodeKind::Fifo => 0o010_000,
        NodeKind::Device {
            kind: DeviceKind::Character,
            ..
        } => 0o020_000,
        NodeKind::Device {
            kind: DeviceKind::Block,
            ..
        } => 0o060_000,
    };
    file_type | (node.mode & 0o7777)
}

/// `1 file`, `2 files`: a count with its noun in the right number (`noun` singular, `plural`
/// its plural).
pub fn count(number: u64, singular: &str, plural: &str) -> String {
    if number == 1 {
        format!("1 {singular}")
    } else {
        format!("{number} {plural}")
    }
}

/// A client's Unix time in the local zone with how long ago it was: `2026-12-07 03:40:00 (2 h
/// 3 min ago)`; `?` when unknown.
pub fn since_unix(started_unix: Option<i64>, now: jiff::Timestamp) -> String {
    let Some(time) = started_unix.and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
    else {
        return "?".into();
    };
    let local = time
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    let ago = now.as_second().saturating_sub(time.as_second());
    match u64::try_from(ago) {
        Ok(seconds) => format!(
            "{local} ({} ago)",
            span(std::time::Duration::from_secs(seconds))
        ),
        Err(_) => format!("{local} (in the future by this clock)"),
    }
}

/// An unended backup session in one line, for people: id, host label, machine, pid, since
/// when and why it is waiting.
pub fn waiting_session(
    session: &cairn_store::sessions::WaitingSession,
    now: jiff::Timestamp,
) -> String {
    format!(
        "session {} host {} machine {} pid {} since {}: {}",
        session.session,
        session.host.as_deref().unwrap_or("?"),
        session.machine,
        session
            .pid
            .map_or_else(|| "?".to_owned(), |pid| pid.to_string()),
        since_unix(session.started_unix, now),
        session.reason
    )
}

/// An unended backup session as JSON fields.
pub fn waiting_session_json(session: &cairn_store::sessions::WaitingSession) -> serde_json::Value {
    serde_json::json!({
        "session": session.session,
        "host": session.host,
        "machine": session.machine,
        "pid": session.pid,
        "started_unix": session.started_unix,
        "reason": session.reason,
        "old_format": session.old_format,
        "end_command": format!("cairn prune --end-session {}", session.session),
    })
}

/// Rows of cells as aligned lines: each column padded to its widest cell (counted in
/// characters) and two spaces apart, the last column unpadded, trailing spaces trimmed. The
/// first row is usually the header. Long hosts, tags or paths widen their column; they never
/// push the columns after them out of line.
pub fn aligned_rows<Row: AsRef<[String]>>(rows: &[Row]) -> Vec<String> {
    let columns = rows.iter().map(|row| row.as_ref().len()).max().unwrap_or(0);
    let mut widths = vec![0_usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let row = row.as_ref();
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if column + 1 < row.len() {
                    let padding = widths[column] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', padding));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// An error on one line: its message and each cause, joined by `: `, leaving out a cause whose
/// text the line already holds (an object store's error repeats its inner errors' text at every
/// level), and the lines of a multi-line cause (a command's stderr) joined by ` | `. For the
/// run state, status and warnings.
pub fn error_line(error: &anyhow::Error) -> String {
    chain_line(error.chain().map(ToString::to_string))
}

/// [`error_line`] keeping the lines of a multi-line cause (the last error a command prints,
/// where a failed source command's stderr follows, indented).
pub fn error_text(error: &anyhow::Error) -> String {
    chain_text(error.chain().map(ToString::to_string))
}

/// The texts of an error and its causes (outermost first) joined by `: `, leaving out a cause
/// whose text is already there.
pub fn chain_text(causes: impl IntoIterator<Item = String>) -> String {
    let mut text = String::new();
    for cause in causes {
        let cause = cause.trim();
        if cause.is_empty() || text.contains(cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(cause);
    }
    text
}

/// The non-empty lines of `text`, trimmed, joined by ` | `.
fn joined_lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// [`error_line`] over the texts of an error and its causes, outermost first.
pub fn chain_line(causes: impl IntoIterator<Item = String>) -> String {
    joined_lines(&chain_text(causes))
}

#[cfg(test)]
mod error_line_tests {
    use super::{aligned_rows, chain_line};

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_whatever_its_length() {
        let long_host = "a-very-long-host-name.example.internal".to_owned();
        let rows = [
            ["ID", "host", "tags", "paths"].map(str::to_owned),
            ["1a2b3c4d", &long_host, "nightly", "/srv"].map(str::to_owned),
            [
                "5e6f7a8b",
                "db1",
                "source:postgres-main,nightly,äöü",
                "app.archive",
            ]
            .map(str::to_owned),
        ];
        let lines = aligned_rows(&rows);
        let column =
            |line: &str, text: &str| line.find(text).map(|byte| line[..byte].chars().count());
        let paths_at = column(&lines[0], "paths");
        assert_eq!(column(&lines[1], "/srv"), paths_at, "{lines:#?}");
        assert_eq!(column(&lines[2], "app.archive"), paths_at, "{lines:#?}");
        assert_eq!(column(&lines[2], "source:"), column(&lines[0], "tags"));
        assert_eq!(lines[0].chars().count(), paths_at.unwrap() + "paths".len());
        assert!(lines.iter().all(|line| !line.ends_with(' ')));
        assert!(aligned_rows::<[String; 0]>(&[]).is_empty());
    }

    #[test]
    fn a_cause_already_said_is_left_out_and_lines_are_joined() {
        let store = "Generic S3 error: Error performing PUT http://127.0.0.1:9/b/x in 1.2s - \
                     Error after 4 retries: error sending request: tcp connect error: Connection \
                     refused (os error 111)";
        let chain = [
            "while writing pack 1a2b".to_owned(),
            format!("store request failed: {store}"),
            store.to_owned(),
            "error sending request".to_owned(),
            "tcp connect error: Connection refused (os error 111)".to_owned(),
            "Connection refused (os error 111)".to_owned(),
        ];
        assert_eq!(
            chain_line(chain),
            format!("while writing pack 1a2b: store request failed: {store}")
        );
        assert_eq!(
            chain_line([
                "hook failed".to_owned(),
                "line one\n  line two\n\n".to_owned()
            ]),
            "hook failed: line one | line two"
        );
        assert_eq!(
            chain_line(["a".to_owned(), "b".to_owned(), "c".to_owned()]),
            "a: b: c"
        );
        assert_eq!(chain_line(Vec::<String>::new()), "");
    }
}

/// `text` with every object id (a run of exactly 64 hex digits) cut to its first 8, as
/// `short_id` shows it: damage reports name objects by what a reader can compare at a glance.
pub fn shorten_ids(text: &str) -> String {
    const ID_LEN: usize = 64;
    const SHORT_LEN: usize = 8;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    while start < bytes.len() {
        let run = bytes[start..]
            .iter()
            .take_while(|byte| byte.is_ascii_hexdigit())
            .count();
        if run == 0 {
            // Copy one character (not byte) and move on.
            let character = text[start..].chars().next().unwrap_or_default();
            out.push(character);
            start += character.len_utf8();
        } else {
            let word = &text[start..start + run];
            let before_is_word = out
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
            if run == ID_LEN && !before_is_word {
                out.push_str(&word[..SHORT_LEN]);
            } else {
                out.push_str(word);
            }
            start += run;
        }
    }
    out
}

/// Tags as one unambiguous field: comma-separated, and a tag that holds a comma, a space, a
/// double quote or a backslash, or is empty, in double quotes with `"` and `\` escaped
/// (`nightly,"db, main"`).
pub fn tags(tags: &[String]) -> String {
    tags.iter()
        .map(|tag| {
            let plain = !tag.is_empty()
                && !tag.chars().any(|c| {
                    c == ',' || c == '"' || c == '\\' || c.is_whitespace() || c.is_control()
                });
            if plain {
                tag.clone()
            } else {
                format!("{tag:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_show_types_and_special_bits() {
        let cases = [
            (0o100_644, "-rw-r--r--"),
            (0o040_755, "drwxr-xr-x"),
            (0o120_777, "lrwxrwxrwx"),
            (0o010_600, "prw-------"),
            (0o020_660, "crw-rw----"),
            (0o060_660, "brw-rw----"),
            (0o140_755, "srwxr-xr-x"),
            (0o104_755, "-rwsr-xr-x"),
            (0o104_644, "-rwSr--r--"),
            (0o102_755, "-rwxr-sr-x"),
            (0o102_745, "-rwxr-Sr-x"),
            (0o041_777, "drwxrwxrwt"),
            (0o041_776, "drwxrwxrwT"),
            (0o107_777, "-rwsrwsrwt"),
            (0o107_000, "---S--S--T"),
            (0o000_644, "?rw-r--r--"),
        ];
        for (mode, expected) in cases {
            assert_eq!(mode_string(mode), expected, "{mode:o}");
        }
    }

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(0, "file", "files"), "0 files");
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(2, "file", "files"), "2 files");
        assert_eq!(count(1, "match", "matches"), "1 match");
    }

    #[test]
    fn tags_are_unambiguous() {
        let tags = |list: &[&str]| {
            super::tags(&list.iter().map(|tag| (*tag).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(tags(&[]), "");
        assert_eq!(tags(&["nightly", "db"]), "nightly,db");
        assert_eq!(tags(&["a,b"]), "\"a,b\"");
        assert_eq!(tags(&["two words", "x"]), "\"two words\",x");
        assert_eq!(tags(&[""]), "\"\"");
        assert_eq!(tags(&["say \"hi\""]), "\"say \\\"hi\\\"\"");
        assert_eq!(tags(&["tab\there"]), "\"tab\\there\"");
        // Different tag lists never print the same.
        assert_ne!(tags(&["a,b"]), tags(&["a", "b"]));
    }

    #[test]
    fn ids_are_shortened_and_nothing_else() {
        let id = "ab".repeat(32);
        assert_eq!(shorten_ids(&format!("data/ab/{id}")), "data/ab/abababab");
        assert_eq!(
            shorten_ids(&format!("tree blob {id} in pack {id}: bad")),
            "tree blob abababab in pack abababab: bad"
        );
        // 63 or 65 hex digits are no id; neither is a hex run glued to a word.
        let short = "c".repeat(63);
        let long = "c".repeat(65);
        assert_eq!(shorten_ids(&short), short);
        assert_eq!(shorten_ids(&long), long);
        assert_eq!(shorten_ids(&format!("x{id}")), format!("x{id}"));
        assert_eq!(shorten_ids("keys/é: ok"), "keys/é: ok");
    }
}

/// Warns on stderr that each snapshot of `vanished` was removed by someone else while `tag` or
/// `rewrite` ran, so it was `not_done` ("not re-tagged", "not rewritten").
pub fn warn_vanished<'id>(
    vanished: impl IntoIterator<Item = &'id cairn_store::Id>,
    not_done: &str,
) {
    for original in vanished {
        eprintln!(
            "warning: snapshot {} was removed by someone else meanwhile: {not_done}",
            original.short()
        );
    }
}
