//! `cairn key list | add | remove | passwd`.

use anyhow::Result;
use cairn_store::format::tree::Timestamp;
use cairn_store::keyring::{KeyEntry, KeyState, NewKey, RemovalPolicy};
use cairn_store::keys::{KdfParams, KeyObject};

use crate::args::{GlobalArgs, KeyCommand, KeyRemoveArgs, NewKeyArgs};
use crate::render;
use crate::settings;

/// Runs a key command.
pub fn run(global: &GlobalArgs, command: &KeyCommand) -> Result<()> {
    match command {
        KeyCommand::List => list(global),
        KeyCommand::Add(args) => add(global, args),
        KeyCommand::Remove(args) => remove(global, args),
        KeyCommand::Passwd(args) => passwd(global, args),
    }
}

fn new_key(args: &NewKeyArgs) -> NewKey {
    NewKey {
        kdf: settings::kdf_params(&args.kdf),
        host: settings::host_name(),
        created_unix: jiff::Timestamp::now().as_second(),
    }
}

fn kdf_text(kdf: KdfParams) -> String {
    let memory = if kdf.memory_kib.is_multiple_of(1024) {
        format!("{} MiB", kdf.memory_kib / 1024)
    } else {
        format!("{} KiB", kdf.memory_kib)
    };
    format!("m={memory} t={} p={}", kdf.iterations, kdf.parallelism)
}

fn created(object: &KeyObject) -> Timestamp {
    Timestamp {
        seconds: object.created_unix,
        nanos: 0,
    }
}

fn entry_json(entry: &KeyEntry) -> serde_json::Value {
    let mut value = serde_json::json!({
        "message_type": "key",
        "name": entry.name,
        "id": entry.id.map(|id| id.to_hex()),
        "short_id": entry.short(),
        "current": entry.is_current(),
        "status": match entry.state {
            KeyState::Current(_) => "current",
            KeyState::Readable(_) => "readable",
            KeyState::Damaged(_) => "damaged",
        },
    });
    if let Some(object) = entry.object() {
        value["created"] = render::rfc3339(created(object)).into();
        value["host"] = object.host.clone().into();
        value["kdf"] = serde_json::json!({
            "algorithm": "argon2id",
            "memory_kib": object.kdf.memory_kib,
            "iterations": object.kdf.iterations,
            "parallelism": object.kdf.parallelism,
        });
    }
    if let KeyState::Damaged(reason) = &entry.state {
        value["reason"] = reason.clone().into();
    }
    value
}

fn list(global: &GlobalArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let entries = repository.list_keys()?;
    if global.json {
        for entry in &entries {
            render::json_line(&entry_json(entry));
        }
        return Ok(());
    }
    outln!("  {:<10} {:<19} {:<16} Argon2id", "ID", "created", "host");
    for entry in &entries {
        let mark = match entry.state {
            KeyState::Current(_) => '*',
            KeyState::Readable(_) => ' ',
            KeyState::Damaged(_) => '!',
        };
        match (&entry.state, entry.object()) {
            (KeyState::Damaged(reason), _) => {
                outln!("{mark} {:<10} damaged: {reason}", entry.short());
            }
            (_, Some(object)) => outln!(
                "{mark} {:<10} {:<19} {:<16} {}",
                entry.short(),
                render::local_time(created(object)),
                object.host,
                kdf_text(object.kdf)
            ),
            (_, None) => {}
        }
    }
    if !global.quiet {
        let damaged = entries
            .iter()
            .filter(|entry| entry.object().is_none())
            .count();
        let noun = if entries.len() == 1 { "key" } else { "keys" };
        outln!(
            "{} {noun} ({damaged} damaged); * = opened by this password",
            entries.len()
        );
    }
    Ok(())
}

fn add(global: &GlobalArgs, args: &NewKeyArgs) -> Result<()> {
    let (repository, password) = settings::open_repository_with_password(global)?;
    let new_password = settings::new_password(args)?;
    let id = repository.add_key(&password, &new_password, &new_key(args))?;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "key_added",
            "id": id.to_hex(),
            "short_id": id.short(),
        }));
    } else if !global.quiet {
        outln!(
            "added key {}: the new password opens the repository",
            id.short()
        );
    }
    Ok(())
}

fn remove(global: &GlobalArgs, args: &KeyRemoveArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let policy = if args.force {
        RemovalPolicy::AllowCurrent
    } else {
        RemovalPolicy::KeepCurrent
    };
    let removed = repository.remove_key(&args.id, policy)?;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "key_removed",
            "id": removed.id.map(|id| id.to_hex()),
            "short_id": removed.short(),
            "current": removed.is_current(),
        }));
    } else if !global.quiet {
        outln!("removed key {}", removed.short());
    }
    if removed.is_current() {
        eprintln!("warning: the password used for this command no longer opens the repository");
    }
    Ok(())
}

fn passwd(global: &GlobalArgs, args: &NewKeyArgs) -> Result<()> {
    let (repository, password) = settings::open_repository_with_password(global)?;
    let new_password = settings::new_password(args)?;
    let change = repository.change_password(&password, &new_password, &new_key(args))?;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "password_changed",
            "added": change.added.to_hex(),
            "removed": change.removed.to_hex(),
        }));
    } else if !global.quiet {
        outln!(
            "password changed: key {} added and verified, key {} removed",
            change.added.short(),
            change.removed.short()
        );
    }
    Ok(())
}
