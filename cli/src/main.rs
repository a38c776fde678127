//! The `cairn` binary: parse arguments, run a command, map errors to exit codes.

/// `println!` for command output that never panics: see [`render::print_out`].
macro_rules! outln {
    () => {
        $crate::render::print_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::render::print_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output that never panics: see [`render::print_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::render::print_out(format_args!($($arg)*))
    };
}

mod args;
mod commands;
mod config;
mod copy_lag;
mod exit;
mod help;
mod metrics;
mod progress;
mod render;
mod schedule;
mod settings;
mod source_command;
mod state;

use std::process::ExitCode;

use clap::FromArgMatches;
use nix::sys::signal::{SigSet, Signal};

use args::{Cli, Command};
use cairn_store::ErrorKind;
use commands::Completion;

use exit::{
    EXIT_APPEND_ONLY, EXIT_BUSY, EXIT_FATAL, EXIT_NO_MATCH, EXIT_NO_REPOSITORY, EXIT_NO_SOURCE,
    EXIT_PARTIAL, EXIT_RECOVER_FAILED, EXIT_RUN_FAILED, EXIT_SOURCE_COMMAND, EXIT_UNHEALTHY,
    EXIT_UNSUPPORTED, EXIT_USAGE, EXIT_WRONG_PASSWORD,
};

fn exit_code(error: &anyhow::Error) -> u8 {
    if error
        .downcast_ref::<source_command::SourceCommandFailed>()
        .is_some()
    {
        return EXIT_SOURCE_COMMAND;
    }
    if error.downcast_ref::<config::ConfigError>().is_some() {
        return EXIT_USAGE;
    }
    if error.downcast_ref::<commands::NoMatch>().is_some() {
        return EXIT_NO_MATCH;
    }
    if let Some(cairn_store::Error::Backend(cairn_store::backend::BackendError::InvalidOption {
        ..
    })) = error.downcast_ref::<cairn_store::Error>()
    {
        return EXIT_USAGE;
    }
    let kind = error
        .downcast_ref::<cairn_store::Error>()
        .map(cairn_store::Error::kind)
        .or_else(|| {
            error
                .downcast_ref::<cairn_store::keyring::KeyringError>()
                .map(cairn_store::keyring::KeyringError::kind)
        });
    match kind {
        Some(ErrorKind::NotFound) => EXIT_NO_REPOSITORY,
        Some(ErrorKind::WrongPassword) => EXIT_WRONG_PASSWORD,
        Some(ErrorKind::Busy) => EXIT_BUSY,
        Some(ErrorKind::AppendOnly) => EXIT_APPEND_ONLY,
        Some(ErrorKind::Unsupported) => EXIT_UNSUPPORTED,
        Some(ErrorKind::NoSource) => EXIT_NO_SOURCE,
        Some(ErrorKind::NoMatch) => EXIT_NO_MATCH,
        _ => EXIT_FATAL,
    }
}

/// What to do about an error whose message names no command: a command that finds the problem,
/// or a plain statement that none does (README, "When something is wrong").
fn advice(error: &anyhow::Error) -> Option<&'static str> {
    let error = error.downcast_ref::<cairn_store::Error>()?;
    if matches!(error, cairn_store::Error::Cache { .. }) {
        return Some(
            "`cairn index rebuild` replaces the local cache; deleting the file is safe too",
        );
    }
    match error.kind() {
        ErrorKind::BadData => Some(
            "`cairn check` lists what is damaged and which snapshots it affects; README \
             \"When something is wrong\" says what repairs it",
        ),
        ErrorKind::Transient => Some(
            "the object store or the network failed, which says nothing about the data: try \
             again; no cairn command fixes it",
        ),
        ErrorKind::LocalIo => Some("a local file problem: no cairn command fixes it"),
        _ => None,
    }
}

fn run(cli: &Cli, config: Option<&config::Config>) -> anyhow::Result<Completion> {
    let global = &cli.global;
    match &cli.command {
        Command::Init(args) => commands::init::run(global, args).map(|()| Completion::Done),
        Command::Backup(args) => commands::backup::run(global, args),
        Command::Snapshots(args) => {
            commands::snapshots::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Ls(args) => commands::ls::run(global, config, args).map(|()| Completion::Done),
        Command::Restore(args) => commands::restore::run(global, config, args),
        Command::Dump(args) => commands::dump::run(global, config, args).map(|()| Completion::Done),
        Command::Mount(args) => {
            commands::mount::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Check(args) => {
            commands::check::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Drill(args) => {
            commands::drill::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Forget(args) => {
            commands::forget::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Index(command) => commands::index::run(global, command).map(|()| Completion::Done),
        Command::Prune(args) => commands::prune::run(global, args).map(|()| Completion::Done),
        Command::Key(command) => commands::key::run(global, command).map(|()| Completion::Done),
        Command::Repair(command) => {
            commands::repair::run(global, command).map(|()| Completion::Done)
        }
        Command::Diff(args) => commands::diff::run(global, config, args).map(|()| Completion::Done),
        Command::Find(args) => commands::find::run(global, config, args).map(|()| Completion::Done),
        Command::Stats(args) => {
            commands::stats::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Tag(args) => commands::tag::run(global, config, args).map(|()| Completion::Done),
        Command::Rewrite(args) => {
            commands::rewrite::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Completions(args) => {
            commands::completions::completions(args);
            Ok(Completion::Done)
        }
        Command::Man(args) => commands::completions::man(args).map(|()| Completion::Done),
        Command::ExitCodes => {
            exit::print(global.json);
            Ok(Completion::Done)
        }
        Command::Run(args) => commands::run::run(global, config, args),
        Command::Recover(args) => commands::recover::run(global, config, args),
        Command::Status(args) => commands::status::run(global, config, args),
        Command::Metrics(args) => {
            commands::metrics::run(global, config, args).map(|()| Completion::Done)
        }
        Command::Copy(args) => commands::copy::run(global, config, args),
    }
}

/// Makes a write past the file-size limit (`ulimit -f`) fail with `EFBIG`, which restore reports
/// and cleans up after like any write error, instead of raising SIGXFSZ, whose default action
/// kills the process mid-write and leaves a temporary file behind. Runs before any thread
/// starts, so every thread inherits the mask; programs cairn starts get a clean mask from std.
fn block_file_size_signal() {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGXFSZ);
    // On failure the default behaviour stays: fatal, but the repository is never at risk.
    let _ = signals.thread_block();
}

/// The stack of the thread that runs a command. Walking a snapshot's trees and the file system
/// recurses once per directory level, and a legal tree can be thousands of levels deep (a path
/// of 12 KiB of one-byte names is 6,000); the main thread's 8 MiB overflow at about 5,000
/// levels. Only the pages a walk touches are ever used.
const COMMAND_STACK: usize = 256 << 20;

fn main() -> ExitCode {
    block_file_size_signal();
    // The thread inherits the signal mask set above.
    match std::thread::Builder::new()
        .name("cairn".into())
        .stack_size(COMMAND_STACK)
        .spawn(run_command)
    {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        // No room for a stack that large: run on this one (deep trees may not fit).
        Err(_) => run_command(),
    }
}

/// Parses the command line, runs the command and maps its outcome to the exit code.
fn run_command() -> ExitCode {
    let mut cli = match Cli::from_arg_matches(&help::command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.format(&mut help::command()).exit(),
    };
    if let Some(threads) = cli.global.threads {
        // Fails only if a pool already exists, which nothing before this line starts.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(threads))
            .build_global();
    }
    let pipeline_stats = std::env::var_os("CAIRN_PIPELINE_STATS").is_some_and(|value| value == "1");
    if pipeline_stats {
        cairn_store::pipeline_stats::enable();
    }
    cairn_store::index::cache::set_cache_memory(
        usize::try_from(cli.global.cache_memory_mib).unwrap_or(usize::MAX) * 1024 * 1024,
    );
    let outcome = match cli.global.config.as_deref().map(config::Config::load) {
        Some(Err(error)) => Err(error.into()),
        loaded => {
            let config = loaded.and_then(Result::ok);
            if let Some(config) = &config {
                config.apply_to(&mut cli.global);
            }
            run(&cli, config.as_ref())
        }
    };
    if cli.global.verbose
        && let Some(backend) = settings::OPENED_BACKEND.get()
    {
        render::requests(cli.global.json, &backend.stats());
    }
    if pipeline_stats {
        render::pipeline_stats(
            cli.global.json,
            &cairn_store::pipeline_stats::totals(),
            cairn_store::pipeline_stats::probed_bytes(),
        );
    }
    if render::stdout_failed() && outcome.is_ok() {
        return ExitCode::from(EXIT_FATAL);
    }
    match outcome {
        Ok(Completion::Done) => ExitCode::SUCCESS,
        Ok(Completion::Partial) => ExitCode::from(EXIT_PARTIAL),
        Ok(Completion::Unhealthy) => ExitCode::from(EXIT_UNHEALTHY),
        Ok(Completion::RunFailed) => ExitCode::from(EXIT_RUN_FAILED),
        Ok(Completion::RecoverFailed) => ExitCode::from(EXIT_RECOVER_FAILED),
        Err(error) => {
            let mut message = render::error_text(&error);
            if !message.contains("`cairn ")
                && let Some(advice) = advice(&error)
            {
                message.push_str(" (");
                message.push_str(advice);
                message.push(')');
            }
            eprintln!("cairn: {message}");
            ExitCode::from(exit_code(&error))
        }
    }
}
