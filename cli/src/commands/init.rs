//! `cairn init`.

use anyhow::Result;
use cairn_store::backend::object_store::CreateDirectory;
use cairn_store::{InitOptions, Repository};

use crate::args::{Compression, GlobalArgs, InitArgs};
use crate::render;
use crate::settings;

/// Creates the repository.
pub fn run(global: &GlobalArgs, args: &InitArgs) -> Result<()> {
    // The source first: a wrong source password must not leave a half-made repository.
    let like = match &args.copy_chunker_params_from {
        Some(location) => {
            let source = settings::open_source_repository(global, location, &args.from)?;
            Some((source.config().chunker, source.chunker_seed()))
        }
        None => None,
    };
    let backend = settings::backend(global, CreateDirectory::Yes)?;
    let password = settings::password(global, true)?;
    let options = InitOptions {
        kdf: settings::kdf_params(&args.kdf),
        chunker: like.map_or_else(
            || settings::chunker_params(&args.layout),
            |(chunker, _)| chunker,
        ),
        chunker_seed: like.map(|(_, seed)| seed),
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
        if let Some(location) = &args.copy_chunker_params_from {
            outln!(
                "it chunks like {location} (same chunker parameters and seed): `cairn copy` from it never re-chunks"
            );
        }
        outln!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(())
}
