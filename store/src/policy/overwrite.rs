//! What a restore does with an entry that already stands where a snapshot entry goes: the
//! `--overwrite` modes (restic's meaning) as a pure decision over what the restore found.
//!
//! Must not touch the file system: the restore describes what it found ([`Existing`]) and, for
//! `if-changed`, whether the content is the same; this module only decides.

use crate::format::tree::Timestamp;

/// When a restore replaces an entry that already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overwrite {
    /// Always replace what exists.
    Always,
    /// Replace unless it already holds the snapshot's content (files: same size and keyed hash;
    /// symlinks: same target). The end state is that of `Always`, without rewriting what is
    /// already right, so an interrupted restore resumes cheaply.
    #[default]
    IfChanged,
    /// Replace only what is older (modification time) than the snapshot's entry.
    IfNewer,
    /// Never replace what exists.
    Never,
}

impl Overwrite {
    /// The mode's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfChanged => "if-changed",
            Self::IfNewer => "if-newer",
            Self::Never => "never",
        }
    }
}

/// The kind of a file-system entry, as the restore reports kind changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device node).
    Other,
}

impl EntryKind {
    /// The kind's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Other => "special file",
        }
    }
}

/// What stands at a snapshot entry's place in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// Its kind.
    pub kind: EntryKind,
    /// Its modification time.
    pub mtime: Timestamp,
}

/// What the restore does with one snapshot entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing stands there: create the entry.
    Create,
    /// Remove what stands there and create the entry.
    Replace,
    /// Leave what stands there: it is a directory to restore into (its metadata is set at the
    /// end), or a file or symlink that already holds the snapshot's content (its metadata is
    /// set again).
    Reuse,
    /// Leave what stands there untouched (the overwrite mode forbids replacing it).
    Keep,
}

/// Decides what happens to the snapshot entry of kind `wanted` and time `mtime` when `existing`
/// stands at its place. `same_content` is asked only when the answer depends on it (`IfChanged`
/// with a file or symlink over one of its kind), since it may read the whole file.
pub fn decide(
    mode: Overwrite,
    wanted: EntryKind,
    mtime: Timestamp,
    existing: Option<Existing>,
    same_content: impl FnOnce() -> bool,
) -> Decision {
    let Some(existing) = existing else {
        return Decision::Create;
    };
    if wanted == EntryKind::Directory && existing.kind == EntryKind::Directory {
        // Restoring into a directory never replaces it; `Never` leaves its metadata alone.
        return if mode == Overwrite::Never {
            Decision::Keep
        } else {
            Decision::Reuse
        };
    }
    match mode {
        Overwrite::Always => Decision::Replace,
        Overwrite::Never => Decision::Keep,
        Overwrite::IfNewer => {
            if mtime > existing.mtime {
                Decision::Replace
            } else {
                Decision::Keep
            }
        }
        Overwrite::IfChanged => {
            if existing.kind == wanted && same_content() {
                Decision::Reuse
            } else {
                Decision::Replace
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Timestamp = Timestamp {
        seconds: 1_000,
        nanos: 5,
    };
    const NEW: Timestamp = Timestamp {
        seconds: 1_000,
        nanos: 6,
    };
    const KINDS: [EntryKind; 4] = [
        EntryKind::File,
        EntryKind::Directory,
        EntryKind::Symlink,
        EntryKind::Other,
    ];
    const MODES: [Overwrite; 4] = [
        Overwrite::Always,
        Overwrite::IfChanged,
        Overwrite::IfNewer,
        Overwrite::Never,
    ];

    fn at(kind: EntryKind, mtime: Timestamp) -> Existing {
        Existing { kind, mtime }
    }

    #[test]
    fn nothing_there_is_always_created() {
        for mode in MODES {
            for kind in KINDS {
                assert_eq!(decide(mode, kind, OLD, None, || true), Decision::Create);
            }
        }
    }

    #[test]
    fn directories_are_restored_into_except_with_never() {
        for mode in MODES {
            let expected = if mode == Overwrite::Never {
                Decision::Keep
            } else {
                Decision::Reuse
            };
            let existing = Some(at(EntryKind::Directory, NEW));
            let decided = decide(mode, EntryKind::Directory, OLD, existing, || {
                panic!("content is not compared for directories")
            });
            assert_eq!(decided, expected, "{mode:?}");
        }
    }

    #[test]
    fn the_matrix_of_modes_kinds_and_times() {
        for wanted in KINDS {
            for found in KINDS {
                if wanted == EntryKind::Directory && found == EntryKind::Directory {
                    continue;
                }
                for (snapshot_time, existing_time) in [(OLD, NEW), (NEW, OLD), (OLD, OLD)] {
                    for same in [false, true] {
                        let existing = Some(at(found, existing_time));
                        let decide_with =
                            |mode| decide(mode, wanted, snapshot_time, existing, || same);
                        assert_eq!(decide_with(Overwrite::Always), Decision::Replace);
                        assert_eq!(decide_with(Overwrite::Never), Decision::Keep);
                        let newer = snapshot_time > existing_time;
                        assert_eq!(
                            decide_with(Overwrite::IfNewer),
                            if newer {
                                Decision::Replace
                            } else {
                                Decision::Keep
                            }
                        );
                        let unchanged = wanted == found && same;
                        assert_eq!(
                            decide_with(Overwrite::IfChanged),
                            if unchanged {
                                Decision::Reuse
                            } else {
                                Decision::Replace
                            },
                            "{wanted:?} over {found:?}, same {same}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn content_is_compared_only_when_it_decides() {
        let existing = Some(at(EntryKind::File, OLD));
        for mode in [Overwrite::Always, Overwrite::IfNewer, Overwrite::Never] {
            decide(mode, EntryKind::File, NEW, existing, || {
                panic!("{mode:?} compared content")
            });
        }
        let symlink = Some(at(EntryKind::Symlink, OLD));
        decide(Overwrite::IfChanged, EntryKind::File, NEW, symlink, || {
            panic!("content compared across kinds")
        });
    }
}
