//! `cairn init`.

use anyhow::Result;
use cairn_store::backend::object_store::CreateDirectory;
use cairn_store::{InitOptions, Repository};

use crate::args::{Compression, GlobalArgs, InitArgs};
use crate::render;
use crate::settings;

/// Creates the repository.
pub fn run(global: &GlobalArgs, args: &InitArgs) -> Result<()> {
    let backend = settings::backend(global, CreateDirectory::Yes)?;
    let password = settings::password(global, true)?;
    let options = InitOptions {
        kdf: settings::kdf_params(&args.kdf),
        chunker: settings::chunker_params(&args.layout),
        pack_target_size: args.layout.pack_size_mib.saturating_mul(1024 * 1024),
        compression_level: match global.compression {
            Some(Compression::Level(level)) => level,
            None | Some(Compression::Default) => InitOptions::default().compression_level,
        },
        host: settings::host_name(),
        created_unix: jiff::Timestamp::now().as_second(),
    };
    let repository = Repository::init(
        backend,
        &password,
        &options,
        &settings::cache_location(global),
    )?;
    if args.append_only {
        repository.make_append_only()?;
    }
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "initialized",
            "repository": repository.backend().location(),
            "id": repository.id_hex(),
            "append_only": args.append_only,
        }));
    } else if !global.quiet {
        outln!(
            "created cairn repository {} at {}",
            &repository.id_hex()[..10],
            repository.backend().location()
        );
        outln!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(())
}
