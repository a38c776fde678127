//! The compressibility probe (`--compression-probe on|off`): chunks that look compressed or
//! random are stored raw without a zstd pass, text still shrinks, everything restores byte for
//! byte and `check --read-data` passes; and `CAIRN_PIPELINE_STATS=1` reports every stage.

use crate::support::{Workspace, compressible_text, json_u64, random_bytes};

/// Text compressed by zstd: what a gzip'd or zstd'd layer looks like to a backup.
fn compressed_text(seed: u64, length: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < length {
        out.extend(zstd::bulk::compress(&compressible_text(seed + round, length), 3).unwrap());
        round += 1;
    }
    out.truncate(length);
    out
}

/// The kinds of content the matrix covers, each `length` bytes, distinct per `seed`.
fn kinds(seed: u64, length: usize) -> Vec<(&'static str, Vec<u8>)> {
    let half = length / 2;
    vec![
        ("random", random_bytes(seed, length)),
        ("compressed", compressed_text(seed, length)),
        ("text", compressible_text(seed, length)),
        (
            "text then random",
            [
                compressible_text(seed + 4, half),
                random_bytes(seed + 1, length - half),
            ]
            .concat(),
        ),
        (
            "random then text",
            [
                random_bytes(seed + 2, half),
                compressible_text(seed + 3, length - half),
            ]
            .concat(),
        ),
    ]
}

#[test]
fn probe_stores_incompressible_streams_raw_and_text_compressed_and_all_restore() {
    // One repository per setting, so the same content is stored once in each. Each repository
    // cuts with its own keyed chunker, so the two sizes also differ by how the cuts fall (about
    // 1.5 % on text, more on short streams): the comparisons allow 5 %.
    let with_probe = Workspace::initialized();
    let without_probe = Workspace::initialized();
    let mut seed = 100;
    for length in [256 * 1024, 1 << 20] {
        for kind_index in 0..kinds(0, 0).len() {
            let mut added = Vec::new();
            let (kind, content) = kinds(seed, length).swap_remove(kind_index);
            for (workspace, probe) in [(&with_probe, "on"), (&without_probe, "off")] {
                let stream = format!("{kind}-{length}-{probe}");
                let summary =
                    workspace.backup_stdin(&stream, &content, &["--compression-probe", probe]);
                added.push(json_u64(&summary, "bytes_added"));
                assert_eq!(
                    workspace.cairn(&["dump", "latest", &stream]).ok().stdout,
                    content,
                    "{stream} restores byte for byte"
                );
            }
            let (on, off) = (added[0], added[1]);
            let raw = length as u64;
            match kind {
                "random" | "compressed" => {
                    assert!(
                        on >= raw && on < raw + raw / 50 + 8192,
                        "{kind} {length}: {on} for {raw}"
                    );
                    assert!(
                        on <= off + off / 20,
                        "{kind} {length}: probe on {on}, off {off}"
                    );
                }
                "text" => {
                    assert!(on * 2 < raw, "{kind} {length}: {on} for {raw}");
                    assert!(
                        on <= off + off / 20,
                        "{kind} {length}: probe on {on}, off {off}"
                    );
                }
                _ => {
                    // Half text: the mixture must still shrink (the probe errs towards zstd).
                    assert!(on < raw * 4 / 5, "{kind} {length}: {on} for {raw}");
                    assert!(
                        on <= off + off / 20,
                        "{kind} {length}: probe on {on}, off {off}"
                    );
                }
            }
            seed += 10;
        }
    }
    with_probe.cairn(&["check", "--read-data"]).ok();
    without_probe.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn a_directory_of_mixed_files_restores_byte_for_byte_with_the_probe() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    std::fs::create_dir_all(&source).unwrap();
    let mut expected = Vec::new();
    for (index, length) in [100usize, 5000, 40_000, 700_000].into_iter().enumerate() {
        for (kind, data) in kinds(500 + index as u64 * 10, length) {
            let name = format!("{}-{length}.bin", kind.replace(' ', "_"));
            std::fs::write(source.join(&name), &data).unwrap();
            expected.push((name, data));
        }
    }
    workspace
        .cairn(&[
            "backup",
            "--json",
            "--compression-probe",
            "on",
            source.to_str().unwrap(),
        ])
        .ok();
    let target = workspace.path("target");
    workspace
        .cairn(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let restored_root = target.join(source.strip_prefix("/").unwrap());
    for (name, data) in expected {
        assert_eq!(
            std::fs::read(restored_root.join(&name)).unwrap(),
            data,
            "{name} restores byte for byte"
        );
    }
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn pipeline_stats_report_every_stage_and_the_bytes_probed() {
    let workspace = Workspace::initialized();
    let data = [random_bytes(41, 1 << 20), compressible_text(42, 1 << 20)].concat();
    let mut command = workspace.command(
        &[
            "backup",
            "--json",
            "--compression-probe",
            "on",
            "--stdin",
            "--stdin-name",
            "mixed",
        ],
        &[],
    );
    command.env("CAIRN_PIPELINE_STATS", "1");
    let run = crate::support::run_command(command, Some(&data)).ok();
    let line = run
        .json_lines()
        .into_iter()
        .find(|line| line["message_type"] == "pipeline_stats")
        .expect("a pipeline_stats line");
    for stage in cairn_store::pipeline_stats::Stage::ALL {
        assert!(
            line[stage.name()].is_f64(),
            "stage {} in {line}",
            stage.name()
        );
    }
    let probed = json_u64(&line, "probed_bytes");
    let raw = json_u64(&line, "probe_raw_bytes");
    assert_eq!(probed, data.len() as u64, "every new data chunk is probed");
    // The random megabyte is stored raw (all but chunks straddling the boundary); the text is not.
    assert!(
        raw > 900 * 1024 && raw < 1100 * 1024,
        "{raw} of {probed} bytes stored raw"
    );
}
