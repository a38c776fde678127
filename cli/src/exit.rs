//! Exit codes: one table, from which `--help`, `cairn exit-codes` and the process's exit
//! codes all come (a test checks README's table against it).

/// Success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a fatal error.
pub const EXIT_FATAL: u8 = 1;
/// Exit code for an invalid command line (clap's) or config file.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a snapshot was written but some source entries were unreadable.
pub const EXIT_PARTIAL: u8 = 3;
/// Exit code when the repository does not exist.
pub const EXIT_NO_REPOSITORY: u8 = 10;
/// Exit code when another prune holds the lease.
pub const EXIT_BUSY: u8 = 11;
/// Exit code for a wrong password.
pub const EXIT_WRONG_PASSWORD: u8 = 12;
/// Exit code when deleting is refused because of append-only mode.
pub const EXIT_APPEND_ONLY: u8 = 13;
/// Exit code when the repository was written by a newer format version than this build reads.
pub const EXIT_UNSUPPORTED: u8 = 14;
/// Exit code when the source command of `backup --command` failed (no snapshot written).
pub const EXIT_SOURCE_COMMAND: u8 = 15;
/// Exit code of `status` when a source is overdue or failing.
pub const EXIT_UNHEALTHY: u8 = 16;
/// Exit code of `run` when a source or step failed.
pub const EXIT_RUN_FAILED: u8 = 17;
/// Exit code of `backup` when none of its source paths exists.
pub const EXIT_NO_SOURCE: u8 = 18;
/// Exit code of `recover` when a source could not be recovered (the others were).
pub const EXIT_RECOVER_FAILED: u8 = 19;
/// Exit code when no snapshot matches a selection or holds the named path.
pub const EXIT_NO_MATCH: u8 = 20;
/// Exit code after SIGINT (128 + 2).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code after SIGTERM (128 + 15).
pub const EXIT_TERMINATED: u8 = 143;

/// Every exit code cairn uses and what it means, in order.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (EXIT_OK, "success"),
    (
        EXIT_FATAL,
        "fatal error (including damage found by check, drill, restore or dump, snapshots repair \
         could not salvage, and a store that stopped answering after its retries)",
    ),
    (
        EXIT_USAGE,
        "usage error: invalid command line, config file (named with line and key) or -o option",
    ),
    (
        EXIT_PARTIAL,
        "backup: snapshot written, but some source files could not be read or changed while \
         being read (listed); restore: every file restored and verified, but some metadata \
         (extended attributes, ACLs), FIFOs, device nodes or hard links could not be \
         recreated on the target (warnings listed)",
    ),
    (EXIT_NO_REPOSITORY, "repository does not exist"),
    (
        EXIT_BUSY,
        "another prune holds the repository's prune lease (try again later)",
    ),
    (EXIT_WRONG_PASSWORD, "wrong password or no key matches"),
    (
        EXIT_APPEND_ONLY,
        "refused: the client or repository is append-only and the command would delete",
    ),
    (
        EXIT_UNSUPPORTED,
        "the repository was written by a newer cairn (its format version is named): upgrade",
    ),
    (
        EXIT_SOURCE_COMMAND,
        "backup --command: the source command failed (non-zero exit, killed by a signal, or \
         its output could not be read); no snapshot is written",
    ),
    (
        EXIT_UNHEALTHY,
        "status: a source is overdue (last success older than its max_age) or never \
         succeeded, or the last check or drill failed",
    ),
    (
        EXIT_RUN_FAILED,
        "run: a source, hook, retention, prune, check or drill failed (the others still ran; \
         listed in the summary)",
    ),
    (
        EXIT_NO_SOURCE,
        "backup: none of the source paths exists; no snapshot is written (some missing: a \
         warning each and exit 3)",
    ),
    (
        EXIT_RECOVER_FAILED,
        "recover: a source could not be recovered (no snapshot, nowhere to put its stream, \
         its restore command failed, or it did not verify); the others were",
    ),
    (
        EXIT_NO_MATCH,
        "no snapshot matches the selection (--host, --tag, --path, --source), or the snapshot \
         does not hold the named path",
    ),
    (
        EXIT_INTERRUPTED,
        "interrupted (Ctrl-C, SIGINT); no snapshot is written",
    ),
    (EXIT_TERMINATED, "terminated (SIGTERM); as for 130"),
];

/// Width the meanings are wrapped to, after the code column.
const MEANING_WIDTH: usize = 86;

/// The exit code table as help text: `  CODE meaning`, meanings wrapped and indented.
pub fn table() -> String {
    let mut out = String::new();
    for (code, meaning) in EXIT_CODES {
        let mut line = format!("  {code:<4} ");
        let mut width = 0;
        for word in meaning.split_whitespace() {
            if width > 0 && width + 1 + word.len() > MEANING_WIDTH {
                out.push_str(line.trim_end());
                out.push('\n');
                line = " ".repeat(7);
                width = 0;
            } else if width > 0 {
                line.push(' ');
                width += 1;
            }
            line.push_str(word);
            width += word.len();
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `--help`'s closing text: the exit codes and the environment variables.
pub fn after_help() -> String {
    format!(
        "Exit codes (also `cairn exit-codes`):\n{}\nEnvironment:\n  CAIRN_CONFIG, \
         CAIRN_REPOSITORY, CAIRN_PASSWORD, CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND, \
         CAIRN_CACHE_DIR,\n  CAIRN_NEW_PASSWORD_FILE, CAIRN_NEW_PASSWORD_COMMAND (new password \
         of `key add` and `key passwd`),\n  CAIRN_SCHEDULE_NOW (tests: the RFC 3339 time \
         schedules and the run state go by),\n  CAIRN_LIMIT_UPLOAD, CAIRN_LIMIT_DOWNLOAD (as --limit-upload, --limit-download)",
        table()
    )
}

/// `cairn exit-codes`: the table, or one `exit_code` JSON line per code.
pub fn print(json: bool) {
    if json {
        for (code, meaning) in EXIT_CODES {
            crate::render::json_line(&serde_json::json!({
                "message_type": "exit_code", "code": code, "meaning": meaning,
            }));
        }
    } else {
        out!("{}", table());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_ascending_and_lines_stay_narrow() {
        assert!(EXIT_CODES.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(table().lines().all(|line| line.len() <= 7 + MEANING_WIDTH));
        let codes: Vec<u8> = EXIT_CODES.iter().map(|(code, _)| *code).collect();
        let mut expected: Vec<u8> = vec![0, 1, 2, 3];
        expected.extend(10..=20);
        expected.extend([130, 143]);
        assert_eq!(codes, expected);
    }
}
