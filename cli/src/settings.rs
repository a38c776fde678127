//! Turning global options and the environment into a backend, a password and a cache location.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use cairn_store::backend::Backend;
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::keys::KdfParams;
use cairn_store::{CacheLocation, Repository};

use crate::args::{Compression, FromRepoSecretArgs, GlobalArgs, KdfArgs, LayoutArgs, NewKeyArgs};
use crate::config::CopyDestination;

/// The repository location given with `--repo` or `CAIRN_REPOSITORY`.
pub fn repository_location(global: &GlobalArgs) -> Result<&str> {
    global
        .repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use --repo or set CAIRN_REPOSITORY"))
}

/// `-o key=value` pairs.
pub fn backend_options(global: &GlobalArgs) -> Result<Vec<(String, String)>> {
    let mut options: Vec<(String, String)> = global
        .options
        .iter()
        .map(|option| {
            option
                .split_once('=')
                .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.to_owned()))
                .ok_or_else(|| anyhow!("option {option:?} is not key=value"))
        })
        .collect::<Result<_>>()?;
    // The flags come last, so they beat `-o limit_upload=` (the store reads the last value).
    let limits = [
        ("limit_upload", global.limit_upload),
        ("limit_download", global.limit_download),
    ];
    for (key, rate) in limits {
        if let Some(rate) = rate {
            options.push((key.to_owned(), format!("{rate}B")));
        }
    }
    Ok(options)
}

/// The backend this run opened, so its request counts can be reported when the command ends,
/// whether it succeeded or not.
pub static OPENED_BACKEND: std::sync::OnceLock<Arc<dyn Backend>> = std::sync::OnceLock::new();

/// Opens the backend at the configured location.
pub fn backend(global: &GlobalArgs, create: CreateDirectory) -> Result<Arc<dyn Backend>> {
    let backend = backend_at(global, create)?;
    let _ = OPENED_BACKEND.set(Arc::clone(&backend));
    Ok(backend)
}

/// Opens the backend at the configured location without recording it as this run's.
fn backend_at(global: &GlobalArgs, create: CreateDirectory) -> Result<Arc<dyn Backend>> {
    let location = repository_location(global)?;
    let options = backend_options(global)?;
    match ObjectStoreBackend::open(location, &options, create) {
        Ok(backend) => Ok(Arc::new(backend)),
        Err(cairn_store::backend::BackendError::NotFound { .. }) => {
            Err(cairn_store::Error::RepositoryNotFound(location.to_owned()).into())
        }
        Err(error) => Err(cairn_store::Error::from(error).into()),
    }
}

/// Where the local index cache lives.
pub fn cache_location(global: &GlobalArgs) -> CacheLocation {
    if global.no_cache {
        return CacheLocation::Memory;
    }
    match default_cache_directory(global) {
        Some(directory) => CacheLocation::Directory(directory),
        None => CacheLocation::Memory,
    }
}

/// `--cache-dir`, else the user's cache directory's `cairn`.
fn default_cache_directory(global: &GlobalArgs) -> Option<std::path::PathBuf> {
    global
        .cache_dir
        .clone()
        .or_else(|| dirs::cache_dir().map(|directory| directory.join("cairn")))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Reads the password from `CAIRN_PASSWORD`, `--password-file`, `--password-command`, or a
/// prompt on the terminal (asked twice with `confirm`).
pub fn password(global: &GlobalArgs, confirm: bool) -> Result<Vec<u8>> {
    if let Ok(password) = std::env::var("CAIRN_PASSWORD") {
        return Ok(password.into_bytes());
    }
    if let Some(path) = &global.password_file {
        return password_from_file(path);
    }
    if let Some(command) = &global.password_command {
        return password_from_command(command);
    }
    if std::io::stderr().is_terminal() {
        return prompt_password("enter password for repository: ", confirm);
    }
    bail!(
        "no password given: set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or --password-command (no terminal to ask on)"
    )
}

/// Reads the new password of `key add` and `key passwd` from `--new-password-file`,
/// `--new-password-command`, or a prompt on the terminal (asked twice).
pub fn new_password(args: &NewKeyArgs) -> Result<Vec<u8>> {
    if let Some(path) = &args.new_password_file {
        return password_from_file(path);
    }
    if let Some(command) = &args.new_password_command {
        return password_from_command(command);
    }
    if std::io::stderr().is_terminal() {
        return prompt_password("enter the new password: ", true);
    }
    bail!(
        "no new password given: use --new-password-file, CAIRN_NEW_PASSWORD_FILE or --new-password-command (no terminal to ask on)"
    )
}

fn password_from_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    Ok(first_line(&text).into_bytes())
}

fn password_from_command(command: &str) -> Result<Vec<u8>> {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run password command {command:?}"))?;
    if !output.status.success() {
        bail!("password command {command:?} failed with {}", output.status);
    }
    Ok(first_line(&String::from_utf8_lossy(&output.stdout)).into_bytes())
}

fn prompt_password(prompt: &str, confirm: bool) -> Result<Vec<u8>> {
    let password =
        rpassword::prompt_password(prompt).context("cannot read the password from the terminal")?;
    if confirm {
        let again = rpassword::prompt_password("enter the password again: ")
            .context("cannot read the password from the terminal")?;
        if again != password {
            bail!("the passwords do not match");
        }
    }
    Ok(password.into_bytes())
}

/// Opens the repository with the configured password.
pub fn open_repository(global: &GlobalArgs) -> Result<Repository> {
    open_repository_with_password(global).map(|(repository, _)| repository)
}

/// Opens the repository with the configured password and returns the password too (key
/// commands unwrap the current key object again with it).
pub fn open_repository_with_password(global: &GlobalArgs) -> Result<(Repository, Vec<u8>)> {
    let backend = backend(global, CreateDirectory::No)?;
    let password = password(global, false)?;
    let repository = open_with(global, backend, &password)?;
    Ok((repository, password))
}

/// The global options of the source repository of `copy` (or `init
/// --copy-chunker-params-from`): `location`, the `--from-*` password and store options, and
/// the destination's cache, concurrency and limits.
pub fn source_globals(
    global: &GlobalArgs,
    location: &str,
    from: &FromRepoSecretArgs,
) -> GlobalArgs {
    GlobalArgs {
        repo: Some(location.to_owned()),
        password_file: from.from_password_file.clone(),
        password_command: from.from_password_command.clone(),
        options: from.from_options.clone(),
        append_only: false,
        compression: None,
        ..global.clone()
    }
}

/// Opens the source repository of `copy` (or `init --copy-chunker-params-from`) at `location`
/// with its own password (`CAIRN_FROM_PASSWORD`, `--from-password-file`,
/// `--from-password-command`, or a prompt) and store options. Errors name the source.
pub fn open_source_repository(
    global: &GlobalArgs,
    location: &str,
    from: &FromRepoSecretArgs,
) -> Result<Repository> {
    let source = source_globals(global, location, from);
    let password = if let Ok(password) = std::env::var("CAIRN_FROM_PASSWORD") {
        password.into_bytes()
    } else if let Some(path) = &source.password_file {
        password_from_file(path)?
    } else if let Some(command) = &source.password_command {
        password_from_command(command)?
    } else if std::io::stderr().is_terminal() {
        prompt_password(
            &format!("enter password for source repository {location}: "),
            false,
        )?
    } else {
        bail!(
            "no password given for the source repository {location}: set CAIRN_FROM_PASSWORD, \
             CAIRN_FROM_PASSWORD_FILE or --from-password-command"
        )
    };
    let backend = backend_at(&source, CreateDirectory::No)?;
    open_with(&source, backend, &password).with_context(|| format!("source repository {location}"))
}

/// The global options of a `[[copy]]` destination: its location, store options, password
/// source, cache directory (default: the repository's) and upload limit (default: the
/// repository's); the repository's concurrency and threads.
pub fn destination_globals(global: &GlobalArgs, destination: &CopyDestination) -> GlobalArgs {
    GlobalArgs {
        repo: Some(destination.url.clone()),
        password_file: destination.password_file.clone(),
        password_command: destination.password_command.clone(),
        options: destination
            .options
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        cache_dir: destination
            .cache_dir
            .clone()
            .or_else(|| global.cache_dir.clone()),
        limit_upload: destination.limit_upload.or(global.limit_upload),
        append_only: false,
        compression: None,
        ..global.clone()
    }
}

/// Opens a `[[copy]]` destination with its own password file or command only (never
/// `CAIRN_PASSWORD`, which is the repository's). Errors name the destination.
///
/// # Errors
/// The password cannot be read, or the repository cannot be opened with it.
pub fn open_destination_repository(
    global: &GlobalArgs,
    destination: &CopyDestination,
) -> Result<Repository> {
    let globals = destination_globals(global, destination);
    let password = match (&globals.password_file, &globals.password_command) {
        (Some(path), _) => password_from_file(path)?,
        (None, Some(command)) => password_from_command(command)?,
        (None, None) => bail!("no password_file or password_command"),
    };
    let backend = backend_at(&globals, CreateDirectory::No)?;
    open_with(&globals, backend, &password)
}

/// Opens the repository in `backend` with `password` and the global options' cache,
/// concurrency, append-only and compression choices.
fn open_with(
    global: &GlobalArgs,
    backend: Arc<dyn Backend>,
    password: &[u8],
) -> Result<Repository> {
    let concurrency = cairn_store::repository::Concurrency {
        uploads: global.upload_concurrency,
        downloads: global.download_concurrency,
    };
    let mut repository = Repository::open(backend, password, &cache_location(global))?;
    if let Some(notice) = repository.cache().notice() {
        eprintln!("warning: {notice}");
    }
    if global.no_cache
        && let Some(directory) = default_cache_directory(global)
    {
        // The record of sessions started here is tiny and must outlive the process.
        repository = repository.with_session_record_under(&directory);
    }
    let repository = repository
        .with_concurrency(concurrency)
        .with_client_append_only(global.append_only)
        .with_compression(match global.compression {
            Some(Compression::Level(level)) => Some(level),
            None | Some(Compression::Default) => None,
        })
        .with_compression_probe(global.compression_probe);
    Ok(repository)
}

/// The Argon2id cost chosen on the command line.
pub fn kdf_params(args: &KdfArgs) -> KdfParams {
    KdfParams {
        memory_kib: args.memory_mib.saturating_mul(1024),
        iterations: args.iterations,
        parallelism: args.parallelism,
    }
}

/// The chunker bounds chosen on the command line.
pub fn chunker_params(args: &LayoutArgs) -> cairn_chunker::ChunkerParams {
    cairn_chunker::ChunkerParams {
        min_size: args.chunk_min,
        avg_size: args.chunk_avg,
        max_size: args.chunk_max,
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    cairn_store::lifecycle::this_host()
}

/// Whether cairn runs as root (the run state then defaults to `/var/lib/cairn`).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The user running cairn: `$USER`, else `$LOGNAME`, else the name of the process's user id
/// in the password database (cron and systemd units may set neither variable), else empty.
pub fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("LOGNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.name)
        })
        .unwrap_or_default()
}
