//! The command line as users see it in `--help`: the clap definitions of `args`, with each
//! command's examples, and the global options a command ignores hidden from its help (they
//! are still accepted, so scripts and config files that set them everywhere keep working).

use clap::CommandFactory;

use crate::args::Cli;

/// Global options that only commands with a repository use.
const REPOSITORY_OPTIONS: &[&str] = &[
    "config",
    "repo",
    "password_file",
    "password_command",
    "cache_dir",
    "no_cache",
    "options",
    "upload_concurrency",
    "download_concurrency",
    "append_only",
    "compression",
    "compression_probe",
    "threads",
    "cache_memory_mib",
];

/// Global options that only commands writing new data use (packs and snapshots).
const WRITING_OPTIONS: &[&str] = &["upload_concurrency", "compression", "compression_probe"];

/// Commands that never write data, read file contents or delete: they ignore the writing
/// options, `--download-concurrency` and `--append-only`.
const LISTING_COMMANDS: &[&str] = &[
    "snapshots",
    "ls",
    "find",
    "diff",
    "stats",
    "status",
    "metrics",
];

/// Commands that read file contents but never write data nor delete.
const READING_COMMANDS: &[&str] = &["restore", "dump", "drill", "recover", "check", "mount"];

/// The global options `command` ignores.
fn ignored_globals(command: &str) -> Vec<&'static str> {
    let mut ignored = Vec::new();
    match command {
        "completions" | "man" => {
            ignored.extend(REPOSITORY_OPTIONS);
            ignored.extend(["json", "quiet", "verbose"]);
        }
        "exit-codes" => {
            ignored.extend(REPOSITORY_OPTIONS);
            ignored.extend(["quiet", "verbose"]);
        }
        "key" => {
            ignored.extend(WRITING_OPTIONS);
            ignored.push("download_concurrency");
        }
        "init" => ignored.extend(["upload_concurrency", "download_concurrency"]),
        "backup" => ignored.push("download_concurrency"),
        name if LISTING_COMMANDS.contains(&name) => {
            ignored.extend(WRITING_OPTIONS);
            ignored.extend(["download_concurrency", "append_only"]);
        }
        name if READING_COMMANDS.contains(&name) => {
            ignored.extend(WRITING_OPTIONS);
            if name != "check" {
                ignored.push("append_only");
            }
        }
        _ => {}
    }
    ignored
}

/// Two or three examples of each command, shown at the end of its help.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "init",
        "cairn -r s3://bucket/cairn init\n  cairn -r /mnt/backup init --compression 6 --append-only",
    ),
    (
        "backup",
        "cairn backup /etc /srv --exclude '*.log' --tag nightly\n  mongodump --archive | cairn backup --stdin --name mongo.archive\n  cairn backup --command 'pg_dump shop' --name shop.sql",
    ),
    (
        "snapshots",
        "cairn snapshots\n  cairn snapshots --latest 1 --compact\n  cairn snapshots --group-by host,tags --json",
    ),
    (
        "ls",
        "cairn ls latest /srv/app\n  cairn ls -l --recursive latest /srv/app/config\n  cairn ls --json 1a2b3c4d",
    ),
    (
        "restore",
        "cairn restore latest --target /tmp/restore\n  cairn restore latest:/srv/app --target /srv/app --delete\n  cairn restore 1a2b3c4d --target /tmp/r --include '*.conf' --dry-run",
    ),
    (
        "dump",
        "cairn dump latest mongo.archive | mongorestore --archive\n  cairn dump latest /srv/app > app.tar\n  cairn dump --archive zip latest /srv/app/config > config.zip",
    ),
    (
        "mount",
        "cairn -r /mnt/backup mount /mnt/cairn\n  cairn mount --host db1 --allow-other /mnt/cairn\n  cairn mount s3://bucket/cairn /mnt/cairn",
    ),
    (
        "check",
        "cairn check\n  cairn check --read-data-subset 5%\n  cairn check --read-data-rotate 30",
    ),
    (
        "drill",
        "cairn drill\n  cairn drill latest --sample 5% --scratch /var/tmp",
    ),
    (
        "forget",
        "cairn forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run\n  cairn forget --keep-last 3 --host db1 --prune\n  cairn forget 1a2b3c4d",
    ),
    (
        "index",
        "cairn index rebuild\n  cairn --cache-dir /var/cache/cairn index rebuild",
    ),
    ("prune", "cairn prune\n  cairn prune --dry-run"),
    (
        "key",
        "cairn key list\n  cairn key add --new-password-file /root/second-password\n  cairn key passwd",
    ),
    (
        "repair",
        "cairn repair index\n  cairn repair snapshots\n  cairn repair config",
    ),
    (
        "diff",
        "cairn diff 1a2b3c4d latest\n  cairn diff --metadata 1a2b3c4d 5e6f7a8b",
    ),
    (
        "find",
        "cairn find '*.conf'\n  cairn find --host db1 /srv/app/config.yml\n  cairn find --json 'core.*'",
    ),
    ("stats", "cairn stats\n  cairn stats latest"),
    (
        "tag",
        "cairn tag latest --add keep\n  cairn tag --tag nightly --remove nightly --add weekly\n  cairn tag 1a2b3c4d --set prod,db --dry-run",
    ),
    (
        "rewrite",
        "cairn rewrite --exclude /srv/app/.env --dry-run\n  cairn rewrite --host db1 --exclude '*.key' --forget && cairn prune\n  cairn rewrite latest --exclude-file secrets.txt --json",
    ),
    (
        "copy",
        "cairn -r s3://offsite/srv copy --from-repo /srv/backup --from-password-file /etc/cairn/pass\n  cairn -r /mnt/office copy --from-repo s3://bucket/srv --tag nightly --verify\n  cairn -r /mnt/office copy --from-repo s3://bucket/srv --dry-run",
    ),
    (
        "completions",
        "cairn completions bash > /etc/bash_completion.d/cairn\n  cairn completions zsh > ~/.zfunc/_cairn",
    ),
    (
        "man",
        "cairn man > cairn.1\n  cairn man --dir /usr/local/share/man/man1",
    ),
    (
        "run",
        "cairn --config /etc/cairn.toml run\n  cairn --config /etc/cairn.toml run db --no-drill",
    ),
    (
        "recover",
        "cairn -r s3://bucket/cairn recover --dry-run\n  cairn -r s3://bucket/cairn recover --source db --target /mnt/new",
    ),
    (
        "status",
        "cairn --config /etc/cairn.toml status\n  cairn --config /etc/cairn.toml status --json",
    ),
    (
        "metrics",
        "cairn --config /etc/cairn.toml metrics --metrics-file /var/lib/node_exporter/cairn.prom\n  cairn --config /etc/cairn.toml metrics | grep cairn_last_success",
    ),
    ("exit-codes", "cairn exit-codes\n  cairn exit-codes --json"),
];

/// The full command line: `args::Cli` with examples and the audited global options.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    let globals: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .cloned()
        .collect();
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        let ignored = ignored_globals(&name);
        let examples = EXAMPLES
            .iter()
            .find(|(command_name, _)| *command_name == name)
            .map(|(_, examples)| *examples);
        command = command.mut_subcommand(&name, |mut sub| {
            // A subcommand's own argument of a global's id replaces the global there: a
            // hidden copy keeps the option working but out of this command's help.
            for id in &ignored {
                if let Some(global) = globals.iter().find(|arg| arg.get_id() == id) {
                    sub = sub.arg(global.clone().hide(true));
                }
            }
            match examples {
                Some(examples) => {
                    let existing = sub.get_after_help().map(ToString::to_string);
                    let examples = format!("Examples:\n  {examples}");
                    sub.after_help(match existing {
                        Some(existing) => format!("{existing}\n{examples}"),
                        None => examples,
                    })
                }
                None => sub,
            }
        });
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_examples_and_every_ignored_global_exists() {
        let command = command();
        let globals: Vec<String> = command
            .get_arguments()
            .filter(|arg| arg.is_global_set())
            .map(|arg| arg.get_id().to_string())
            .collect();
        for sub in command.get_subcommands() {
            let name = sub.get_name();
            assert!(
                EXAMPLES.iter().any(|(example, _)| *example == name),
                "{name} has no examples"
            );
            for id in ignored_globals(name) {
                assert!(globals.iter().any(|global| global == id), "{name}: {id}");
            }
        }
        for (name, examples) in EXAMPLES {
            assert!(
                command.find_subcommand(name).is_some(),
                "{name} is no command"
            );
            assert!(
                examples.lines().count() >= 2,
                "{name}: two examples or more"
            );
            for example in examples.lines() {
                let words: Vec<&str> = example.split_whitespace().collect();
                assert!(words.contains(&"cairn"), "{name}: {example}");
            }
        }
        command.debug_assert();
    }
}
