//! Schedules through `cairn run` (times from `CAIRN_SCHEDULE_NOW`, local time UTC): a run backs
//! up only the sources that are due and says when the others are, a run with nothing due touches
//! nothing, naming a source runs it now, the round-robin drill takes the source drilled longest
//! ago, and a drill or check run by hand with `--config` is recorded in the run state that
//! `status` shows.

use std::fs;

use crate::support::{TreeBuilder, Workspace, compressible_text, run_command};

/// `cairn --config CONFIG args...` at local (UTC) time `now`.
fn cairn_at(workspace: &Workspace, config: &str, now: &str, args: &[&str]) -> crate::support::Run {
    let mut full = vec!["--config", config];
    full.extend_from_slice(args);
    let mut command = workspace.command(&full, &[]);
    command.env("TZ", "UTC").env("CAIRN_SCHEDULE_NOW", now);
    run_command(command, None)
}

/// How many snapshots carry `source:NAME`.
fn snapshots_of(workspace: &Workspace, source: &str) -> usize {
    workspace
        .snapshots_tagged(&format!("source:{source}"))
        .len()
}

#[test]
fn runs_take_what_is_due_and_hand_run_drills_and_checks_are_recorded() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("data"));
    tree.file("a.txt", &compressible_text(5, 30_000));
    let stream = workspace.path("stream.bin");
    fs::write(&stream, compressible_text(6, 50_000)).expect("stream");
    let config = workspace.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n\n\
             [sources.data]\npaths = [{data:?}]\nevery = \"1d\"\nwindow = \"01:00-03:00\"\n\n\
             [sources.stream]\ncommand = \"cat {stream}\"\nstream_name = \"stream.bin\"\nevery = \"6h\"\n\n\
             [check]\nevery = \"1d\"\n\n[drill]\nevery = \"2d\"\n",
            state = workspace.path("state").display().to_string(),
            repo = workspace.repo.display().to_string(),
            cache = workspace.cache.display().to_string(),
            data = tree.root().display().to_string(),
            stream = stream.display(),
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let status = |now: &str| {
        cairn_at(&workspace, config, now, &["status", "--json"])
            .ok()
            .summary()
    };

    // 01:10: both sources, the check and the drill (round robin: the first source) are due.
    cairn_at(&workspace, config, "2026-03-02T01:10:00Z", &["run"]).ok();
    assert_eq!(
        (
            snapshots_of(&workspace, "data"),
            snapshots_of(&workspace, "stream")
        ),
        (1, 1)
    );
    let first = status("2026-03-02T01:20:00Z");
    assert_eq!(first["drills"]["data"]["ok"], true, "{first}");
    assert!(first["drills"]["stream"].is_null(), "{first}");
    assert!(first["check"]["ok"] == true, "{first}");

    // 02:10: nothing is due; the run says when each source is, and writes nothing.
    let idle = cairn_at(&workspace, config, "2026-03-02T02:10:00Z", &["run"]).ok();
    let text = idle.text();
    assert!(
        text.contains("data: not due before 2026-03-03 01:00"),
        "{text}"
    );
    assert!(
        text.contains("stream: not due before 2026-03-02 06:10"),
        "{text}"
    );
    assert!(text.contains("nothing due"), "{text}");
    assert_eq!(
        (
            snapshots_of(&workspace, "data"),
            snapshots_of(&workspace, "stream")
        ),
        (1, 1)
    );

    // Naming a source runs it now, due or not.
    cairn_at(&workspace, config, "2026-03-02T02:15:00Z", &["run", "data"]).ok();
    assert_eq!(snapshots_of(&workspace, "data"), 2);

    // 06:40: the 6-hour source again, not the daily one; no drill (every 2d / 2 sources).
    tree.file("a.txt", &compressible_text(7, 30_000));
    cairn_at(&workspace, config, "2026-03-02T06:40:00Z", &["run"]).ok();
    assert_eq!(
        (
            snapshots_of(&workspace, "data"),
            snapshots_of(&workspace, "stream")
        ),
        (2, 2)
    );

    // By hand: the drill of the latest snapshot (the stream's) and a check, both recorded.
    cairn_at(&workspace, config, "2026-03-02T07:00:00Z", &["drill"]).ok();
    cairn_at(&workspace, config, "2026-03-02T07:05:00Z", &["check"]).ok();
    let by_hand = status("2026-03-02T07:10:00Z");
    let stream_drill = &by_hand["drills"]["stream"];
    assert_eq!(stream_drill["ok"], true, "{by_hand}");
    assert!(
        stream_drill["time"]
            .as_str()
            .is_some_and(|time| time.starts_with("2026-03-02T07:00")),
        "{by_hand}"
    );
    assert!(stream_drill["rto_seconds"].as_f64().is_some(), "{by_hand}");
    assert!(
        by_hand["drill"]["detail"]
            .as_str()
            .is_some_and(|detail| detail.starts_with("by hand") && detail.ends_with("of stream")),
        "{by_hand}"
    );
    assert!(
        by_hand["check"]["detail"]
            .as_str()
            .is_some_and(|detail| detail.starts_with("by hand")),
        "{by_hand}"
    );
    let human = cairn_at(&workspace, config, "2026-03-02T07:10:00Z", &["status"])
        .ok()
        .text();
    assert!(
        human.contains("  stream: drilled ok at 2026-03-02 07:00:00 (snapshot "),
        "{human}"
    );
    assert!(human.contains("RTO "), "{human}");

    // A day after the hand-run drill: the round robin drills the source drilled longest ago (data, not stream).
    cairn_at(&workspace, config, "2026-03-03T07:30:00Z", &["run"]).ok();
    let next = status("2026-03-03T07:40:00Z");
    assert!(
        next["drills"]["data"]["time"]
            .as_str()
            .is_some_and(|time| time.starts_with("2026-03-03T07:30")),
        "{next}"
    );
    assert!(
        next["drills"]["stream"]["time"]
            .as_str()
            .is_some_and(|time| time.starts_with("2026-03-02T07:00")),
        "{next}"
    );
}
