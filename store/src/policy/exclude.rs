//! Which source entries a backup takes and leaves out: path lists (`--files-from`,
//! `--files-from-raw`), exclude patterns (`--exclude`, `--exclude-file`, and `--iexclude`,
//! `--iexclude-file` ignoring case), marker files (`--exclude-if-present`), tagged cache
//! directories (`--exclude-caches`), large files (`--exclude-larger-than`) and the file-system
//! boundary (`--one-file-system`).
//!
//! Pure: the rules decide from a path, whether it is a directory, sizes, device numbers and the
//! first bytes of a `CACHEDIR.TAG` that the caller read; nothing here touches the file system.
//!
//! Pattern rules (README "Leaving things out"):
//! - Patterns match absolute paths, component by component: `*`, `?` and `[...]` never match a
//!   `/`; `**` matches any number of whole components.
//! - A pattern that starts with `/` is anchored at the root (`/srv/app/tmp`); any other pattern
//!   matches at any depth, as if it started with `**/` (`*.log`, `node_modules`, `app/tmp`).
//! - A trailing `/` matches directories only (`cache/`).
//! - A matched directory is left out with everything below it.
//! - `!` negation is not supported (a leading `!` is refused, `\!` matches a literal `!`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

/// Why a set of exclude rules could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExcludeError {
    /// A pattern is not a valid glob, or uses what cairn does not support.
    #[error("invalid exclude pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A marker name for `--exclude-if-present` is not a plain file name.
    #[error("invalid --exclude-if-present name {0:?}: give a plain file name such as .nobackup")]
    Marker(String),
}

/// The patterns of an exclude file: one per line; blank lines and lines starting with `#` are
/// skipped; surrounding whitespace is trimmed (a pattern cannot start or end with a space).
pub fn patterns_from_file_text(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// How a path list separates its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathListFormat {
    /// One path per line (`--files-from`): blank lines and lines starting with `#` are skipped,
    /// a trailing `\r` is dropped, other whitespace is part of the name.
    Lines,
    /// Paths ended by NUL bytes (`--files-from-raw`, as `find -print0` writes them): every
    /// byte but NUL is part of a name, empty entries are skipped.
    Nul,
}

/// The paths of a path list (see [`PathListFormat`]); names need not be UTF-8.
pub fn paths_from_list(bytes: &[u8], format: PathListFormat) -> Vec<PathBuf> {
    let entries: Vec<&[u8]> = match format {
        PathListFormat::Lines => bytes
            .split(|byte| *byte == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.starts_with(b"#"))
            .collect(),
        PathListFormat::Nul => bytes.split(|byte| *byte == 0).collect(),
    };
    entries
        .into_iter()
        .filter(|entry| !entry.is_empty())
        .map(|entry| PathBuf::from(OsStr::from_bytes(entry)))
        .collect()
}

/// The file that tags a cache directory (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

/// The bytes a [`CACHEDIR_TAG`] file must start with to tag its directory.
pub const CACHEDIR_TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Whether `start`, the first bytes of a [`CACHEDIR_TAG`] file (at least
/// [`CACHEDIR_TAG_SIGNATURE`]'s length when the file is that long), carries the standard
/// signature: a file of that name without it tags nothing.
pub fn is_cache_directory_tag(start: &[u8]) -> bool {
    start.starts_with(CACHEDIR_TAG_SIGNATURE)
}

/// Everything a backup is told to leave out, as given (compiled by [`ExcludeRules::from_spec`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExcludeSpec {
    /// Patterns (see the module documentation), case-sensitive.
    pub patterns: Vec<String>,
    /// Patterns that match whatever the case of the path (`--iexclude`).
    pub patterns_ignoring_case: Vec<String>,
    /// Names whose presence in a directory leaves the directory out.
    pub markers: Vec<String>,
    /// Leave out directories tagged by a [`CACHEDIR_TAG`] with the standard signature.
    pub caches: bool,
    /// Leave out files larger than this many bytes.
    pub larger_than: Option<u64>,
}

/// Exclude patterns and marker names, compiled once per backup.
#[derive(Debug, Clone)]
pub struct ExcludeRules {
    /// Globs that apply to every entry (and, through a `/**` twin, to everything below).
    any_entry: GlobSet,
    /// Globs from patterns with a trailing `/`: they apply to directories only, and to
    /// everything below a matching directory.
    directories: GlobSet,
    /// Everything below a directory matched by a pattern with a trailing `/`.
    below_directories: GlobSet,
    /// Names whose presence in a directory leaves the directory out.
    markers: Vec<String>,
    /// The patterns as given (both cases), for reports.
    patterns: Vec<String>,
    /// Leave out tagged cache directories.
    caches: bool,
    /// Leave out files larger than this.
    larger_than: Option<u64>,
}

impl Default for ExcludeRules {
    fn default() -> Self {
        Self {
            any_entry: GlobSet::empty(),
            directories: GlobSet::empty(),
            below_directories: GlobSet::empty(),
            markers: Vec::new(),
            patterns: Vec::new(),
            caches: false,
            larger_than: None,
        }
    }
}

/// One pattern rewritten into the glob that matches it anywhere (or anchored), plus whether it
/// names directories only.
fn normalise_pattern(pattern: &str) -> Result<(String, bool), ExcludeError> {
    let refuse = |reason: &str| ExcludeError::Pattern {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    if pattern.starts_with('!') {
        return Err(refuse(
            "negated patterns (!) are not supported; write \\! for a literal !",
        ));
    }
    let directories_only = pattern.ends_with('/');
    let body = pattern.trim_end_matches('/');
    if body.is_empty() {
        return Err(refuse("it matches nothing (or everything)"));
    }
    let glob = if body.starts_with('/') || body.starts_with("**/") {
        body.to_owned()
    } else {
        format!("**/{body}")
    };
    Ok((glob, directories_only))
}

fn compile(
    pattern: &str,
    glob: &str,
    case_insensitive: bool,
) -> Result<globset::Glob, ExcludeError> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|error| ExcludeError::Pattern {
            pattern: pattern.to_owned(),
            reason: error.kind().to_string(),
        })
}

impl ExcludeRules {
    /// Compiles `patterns` (see the module documentation) and the marker names of
    /// `--exclude-if-present`.
    ///
    /// # Errors
    /// [`ExcludeError::Pattern`] for an invalid or unsupported pattern, [`ExcludeError::Marker`]
    /// for a marker that is not a plain file name.
    pub fn new(patterns: &[String], markers: &[String]) -> Result<Self, ExcludeError> {
        Self::from_spec(&ExcludeSpec {
            patterns: patterns.to_vec(),
            markers: markers.to_vec(),
            ..ExcludeSpec::default()
        })
    }

    /// Compiles everything a backup is told to leave out.
    ///
    /// # Errors
    /// [`ExcludeError::Pattern`] for an invalid or unsupported pattern, [`ExcludeError::Marker`]
    /// for a marker that is not a plain file name.
    pub fn from_spec(spec: &ExcludeSpec) -> Result<Self, ExcludeError> {
        let mut any_entry = GlobSetBuilder::new();
        let mut directories = GlobSetBuilder::new();
        let mut below_directories = GlobSetBuilder::new();
        let all_patterns = spec.patterns.iter().map(|pattern| (pattern, false)).chain(
            spec.patterns_ignoring_case
                .iter()
                .map(|pattern| (pattern, true)),
        );
        for (pattern, case_insensitive) in all_patterns {
            let (glob, directories_only) = normalise_pattern(pattern)?;
            let below = format!("{glob}/**");
            if directories_only {
                directories.add(compile(pattern, &glob, case_insensitive)?);
                below_directories.add(compile(pattern, &below, case_insensitive)?);
            } else {
                any_entry.add(compile(pattern, &glob, case_insensitive)?);
                any_entry.add(compile(pattern, &below, case_insensitive)?);
            }
        }
        for marker in &spec.markers {
            if marker.is_empty() || marker == "." || marker == ".." || marker.contains(['/', '\0'])
            {
                return Err(ExcludeError::Marker(marker.clone()));
            }
        }
        let patterns: Vec<String> = spec
            .patterns
            .iter()
            .chain(&spec.patterns_ignoring_case)
            .cloned()
            .collect();
        let build = |builder: GlobSetBuilder| {
            builder.build().map_err(|error| ExcludeError::Pattern {
                pattern: patterns.join(" "),
                reason: error.to_string(),
            })
        };
        Ok(Self {
            any_entry: build(any_entry)?,
            directories: build(directories)?,
            below_directories: build(below_directories)?,
            markers: spec.markers.clone(),
            patterns,
            caches: spec.caches,
            larger_than: spec.larger_than,
        })
    }

    /// Whether there is nothing to exclude (no patterns, markers, cache tags or size limit).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && self.markers.is_empty()
            && !self.caches
            && self.larger_than.is_none()
    }

    /// Whether directories tagged by a [`CACHEDIR_TAG`] are left out (the caller reads the tag
    /// and asks [`is_cache_directory_tag`]).
    pub fn excludes_caches(&self) -> bool {
        self.caches
    }

    /// Whether a regular file of `size` bytes is left out for its size.
    pub fn excludes_size(&self, size: u64) -> bool {
        self.larger_than.is_some_and(|limit| size > limit)
    }

    /// Whether a pattern leaves out the entry at absolute `path` (a directory when
    /// `is_directory`).
    pub fn excludes(&self, path: &Path, is_directory: bool) -> bool {
        let candidate = Candidate::new(path);
        self.any_entry.is_match_candidate(&candidate)
            || self.below_directories.is_match_candidate(&candidate)
            || (is_directory && self.directories.is_match_candidate(&candidate))
    }

    /// The names whose presence in a directory leaves the directory out.
    pub fn markers(&self) -> &[String] {
        &self.markers
    }
}

/// What `--one-file-system` does with an entry met while walking below a given path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSystemBoundary {
    /// Same file system as the given path (or the option is off): back it up.
    Inside,
    /// A directory on another file system (a mount point): record it, empty, so a restore
    /// recreates the mount point, but do not descend.
    MountPoint,
    /// Any other entry on another file system (a bind-mounted file): leave it out.
    Outside,
}

/// Where an entry on device `entry_device` stands relative to `root_device`, the device of the
/// path given to the backup (`None` when `--one-file-system` is off).
pub fn file_system_boundary(
    root_device: Option<u64>,
    entry_device: u64,
    is_directory: bool,
) -> FileSystemBoundary {
    match root_device {
        Some(root) if root != entry_device => {
            if is_directory {
                FileSystemBoundary::MountPoint
            } else {
                FileSystemBoundary::Outside
            }
        }
        _ => FileSystemBoundary::Inside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> ExcludeRules {
        let patterns: Vec<String> = patterns.iter().map(|&pattern| pattern.to_owned()).collect();
        ExcludeRules::new(&patterns, &[]).unwrap()
    }

    fn file(rules: &ExcludeRules, path: &str) -> bool {
        rules.excludes(Path::new(path), false)
    }

    fn directory(rules: &ExcludeRules, path: &str) -> bool {
        rules.excludes(Path::new(path), true)
    }

    #[test]
    fn unanchored_patterns_match_at_any_depth_by_whole_components() {
        let rules = rules(&["*.log", "app/tmp", "**/node_modules"]);
        assert!(file(&rules, "/var/log/syslog.log"));
        assert!(file(&rules, "/x.log"));
        assert!(!file(&rules, "/var/log/syslog.log.1"));
        assert!(!file(&rules, "/var/logs/readme"), "* never crosses a /");
        assert!(directory(&rules, "/srv/app/tmp"));
        assert!(directory(&rules, "/app/tmp"));
        assert!(
            !directory(&rules, "/srv/webapp/tmp"),
            "components match whole"
        );
        assert!(directory(&rules, "/home/me/web/node_modules"));
        assert!(file(&rules, "/home/me/web/node_modules/left-pad/index.js"));
        assert!(!file(&rules, "/home/me/web/node_modules_old"));
    }

    #[test]
    fn anchored_patterns_match_from_the_root_only() {
        let rules = rules(&["/srv/app/tmp", "/home/*/.cache"]);
        assert!(directory(&rules, "/srv/app/tmp"));
        assert!(
            file(&rules, "/srv/app/tmp/session.db"),
            "below an excluded path"
        );
        assert!(!directory(&rules, "/backup/srv/app/tmp"));
        assert!(directory(&rules, "/home/ann/.cache"));
        assert!(!directory(&rules, "/home/ann/work/.cache"));
        assert!(!file(&rules, "/srv/app/tmpfile"));
    }

    #[test]
    fn a_trailing_slash_matches_directories_and_what_is_below_them() {
        let rules = rules(&["cache/"]);
        assert!(directory(&rules, "/home/ann/cache"));
        assert!(
            !file(&rules, "/home/ann/cache"),
            "a file called cache stays"
        );
        assert!(file(&rules, "/home/ann/cache/blob"));
        assert!(directory(&rules, "/home/ann/cache/sub"));
    }

    #[test]
    fn character_classes_questions_and_escapes() {
        let rules = rules(&["core.[0-9]*", "?.tmp", r"\!important"]);
        assert!(file(&rules, "/srv/core.1234"));
        assert!(!file(&rules, "/srv/core.dump"));
        assert!(file(&rules, "/srv/a.tmp"));
        assert!(!file(&rules, "/srv/ab.tmp"));
        assert!(file(&rules, "/srv/!important"));
    }

    #[test]
    fn refuses_negation_empty_and_broken_patterns() {
        for bad in ["!*.log", "/", "", "[z-a]", "a[b"] {
            let error = ExcludeRules::new(&[bad.to_owned()], &[]).unwrap_err();
            assert!(
                matches!(&error, ExcludeError::Pattern { pattern, .. } if pattern == bad),
                "{bad:?}: {error}"
            );
        }
        for bad in ["", "a/b", "..", "."] {
            assert_eq!(
                ExcludeRules::new(&[], &[bad.to_owned()]).unwrap_err(),
                ExcludeError::Marker(bad.to_owned())
            );
        }
    }

    #[test]
    fn no_rules_exclude_nothing() {
        let rules = ExcludeRules::default();
        assert!(rules.is_empty());
        assert!(!directory(&rules, "/"));
        assert!(!file(&rules, "/etc/hosts"));
        let markers = ExcludeRules::new(&[], &[".nobackup".to_owned()]).unwrap();
        assert!(!markers.is_empty());
        assert_eq!(markers.markers(), [".nobackup"]);
        assert!(
            !directory(&markers, "/srv/.nobackup"),
            "markers are not patterns"
        );
    }

    #[test]
    fn exclude_files_skip_comments_and_blank_lines() {
        let text = "# caches\n*.tmp\n\n   \n  /srv/app/tmp  \n#/etc\nnode_modules/\r\n";
        assert_eq!(
            patterns_from_file_text(text),
            ["*.tmp", "/srv/app/tmp", "node_modules/"]
        );
    }

    #[test]
    fn ignoring_case_matches_every_spelling_and_leaves_case_sensitive_patterns_alone() {
        let rules = ExcludeRules::from_spec(&ExcludeSpec {
            patterns: vec!["*.log".into()],
            patterns_ignoring_case: vec!["*.JPG".into(), "/Srv/Tmp".into(), "cache/".into()],
            ..ExcludeSpec::default()
        })
        .unwrap();
        for path in [
            "/a/x.jpg",
            "/a/x.JPG",
            "/a/x.Jpg",
            "/srv/tmp/f",
            "/SRV/TMP/f",
        ] {
            assert!(file(&rules, path), "{path}");
        }
        assert!(directory(&rules, "/home/CACHE"));
        assert!(
            !file(&rules, "/home/CACHE"),
            "trailing / still means directories"
        );
        assert!(file(&rules, "/x.log"));
        assert!(!file(&rules, "/x.LOG"), "--exclude keeps its case");
        assert!(!file(&rules, "/a/x.jpeg"));
        assert!(!file(&rules, "/other/srv/tmp/f"), "anchored stays anchored");
        let error = ExcludeRules::from_spec(&ExcludeSpec {
            patterns_ignoring_case: vec!["a[b".into()],
            ..ExcludeSpec::default()
        })
        .unwrap_err();
        assert!(matches!(error, ExcludeError::Pattern { pattern, .. } if pattern == "a[b"));
    }

    #[test]
    fn cache_tags_need_the_standard_signature() {
        assert!(is_cache_directory_tag(CACHEDIR_TAG_SIGNATURE));
        let mut with_comment = CACHEDIR_TAG_SIGNATURE.to_vec();
        with_comment.extend_from_slice(b"\n# This file is a cache directory tag.\n");
        assert!(is_cache_directory_tag(&with_comment));
        for start in [
            &b""[..],
            b"Signature: 8a477f597d28d172789f06886806bc5",
            b"signature: 8a477f597d28d172789f06886806bc55",
            b" Signature: 8a477f597d28d172789f06886806bc55",
            b"Signature: 0000000000000000000000000000000",
        ] {
            assert!(!is_cache_directory_tag(start), "{start:?}");
        }
        let rules = ExcludeRules::from_spec(&ExcludeSpec {
            caches: true,
            ..ExcludeSpec::default()
        })
        .unwrap();
        assert!(rules.excludes_caches() && !rules.is_empty());
        assert!(!ExcludeRules::default().excludes_caches());
    }

    #[test]
    fn size_limit_leaves_out_only_larger_files() {
        let rules = ExcludeRules::from_spec(&ExcludeSpec {
            larger_than: Some(1000),
            ..ExcludeSpec::default()
        })
        .unwrap();
        assert!(!rules.is_empty());
        for (size, excluded) in [(0, false), (999, false), (1000, false), (1001, true)] {
            assert_eq!(rules.excludes_size(size), excluded, "{size}");
        }
        assert!(!ExcludeRules::default().excludes_size(u64::MAX));
    }

    #[test]
    fn path_lists_keep_names_whole() {
        let lines = b"/etc/hosts\n# comment\n\n/srv/with space \r\nrelative/x\n\xff\xfe\n/last";
        assert_eq!(
            paths_from_list(lines, PathListFormat::Lines),
            [
                PathBuf::from("/etc/hosts"),
                PathBuf::from("/srv/with space "),
                PathBuf::from("relative/x"),
                PathBuf::from(OsStr::from_bytes(b"\xff\xfe")),
                PathBuf::from("/last"),
            ]
        );
        let raw = b"/a\nb\0#not a comment\0\0/c\r\0";
        assert_eq!(
            paths_from_list(raw, PathListFormat::Nul),
            [
                PathBuf::from("/a\nb"),
                PathBuf::from("#not a comment"),
                PathBuf::from("/c\r"),
            ]
        );
        for format in [PathListFormat::Lines, PathListFormat::Nul] {
            assert!(paths_from_list(b"", format).is_empty());
        }
        assert!(paths_from_list(b"\n\n#x\n", PathListFormat::Lines).is_empty());
    }

    #[test]
    fn one_file_system_stops_at_other_devices() {
        assert_eq!(
            file_system_boundary(None, 7, true),
            FileSystemBoundary::Inside
        );
        assert_eq!(
            file_system_boundary(Some(7), 7, true),
            FileSystemBoundary::Inside
        );
        assert_eq!(
            file_system_boundary(Some(7), 8, true),
            FileSystemBoundary::MountPoint
        );
        assert_eq!(
            file_system_boundary(Some(7), 8, false),
            FileSystemBoundary::Outside
        );
    }
}
