//! Glob patterns on snapshot paths, for `restore --include/--exclude` and `find`. Pure: no I/O.
//!
//! A snapshot path is `/`-separated and absolute (`/home/ann/notes.txt`). Rules:
//! - a pattern starting with `/` is anchored: it must match the whole path;
//! - any other pattern matches the path's last components: `*.log` matches every entry named
//!   `*.log` at any depth, `ann/*.txt` every `.txt` entry directly in a directory named `ann`;
//! - `*` and `?` never match `/`; `**` matches any number of whole components; `[abc]`, `[!a]`
//!   and `{jpg,png}` work as in a shell; a trailing `/` is ignored.
//!
//! A matcher only says whether one path matches; what a match means for the entries below it
//! (restore takes or leaves the whole subtree) is decided by the caller.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A set of patterns, matched against snapshot paths.
#[derive(Debug, Clone)]
pub struct PathMatcher {
    set: GlobSet,
    count: usize,
    names_only: bool,
}

impl Default for PathMatcher {
    fn default() -> Self {
        Self {
            set: GlobSet::empty(),
            count: 0,
            names_only: true,
        }
    }
}

/// The glob a pattern compiles to under the module's rules.
fn anchored_glob(pattern: &str) -> String {
    let trimmed = if pattern.len() > 1 {
        pattern.trim_end_matches('/')
    } else {
        pattern
    };
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/**/{trimmed}")
    }
}

impl PathMatcher {
    /// Compiles `patterns` (none: a matcher that matches nothing).
    ///
    /// # Errors
    /// [`Error::Usage`] naming the first pattern that is not a valid glob.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            if pattern.trim().is_empty() {
                return Err(Error::Usage("an empty pattern matches nothing".into()));
            }
            let glob = GlobBuilder::new(&anchored_glob(pattern))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|error| Error::Usage(format!("invalid pattern {pattern:?}: {error}")))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|error| Error::Usage(format!("invalid patterns: {error}")))?;
        let names_only = patterns
            .iter()
            .all(|pattern| !pattern.trim_end_matches('/').contains('/'));
        Ok(Self {
            set,
            count: patterns.len(),
            names_only,
        })
    }

    /// Whether the matcher has no patterns.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether every pattern matches the last component alone (none has a `/`): then whether
    /// an entry matches depends on its name only, not on the directories above it.
    pub fn matches_names_only(&self) -> bool {
        self.names_only
    }

    /// Whether `path` (absolute, `/`-separated) matches any pattern.
    pub fn matches(&self, path: &str) -> bool {
        self.count > 0 && self.set.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> PathMatcher {
        PathMatcher::new(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_name_pattern_matches_at_any_depth() {
        let logs = matcher(&["*.log"]);
        assert!(logs.matches("/a.log"));
        assert!(logs.matches("/var/log/app/b.log"));
        assert!(!logs.matches("/var/log/app/b.log.1"));
        assert!(!logs.matches("/var/logs"));
    }

    #[test]
    fn an_anchored_pattern_matches_the_whole_path() {
        let home = matcher(&["/home/*"]);
        assert!(home.matches("/home/ann"));
        assert!(!home.matches("/home/ann/notes.txt"), "* stops at /");
        assert!(!home.matches("/srv/home/ann"));
        let deep = matcher(&["/srv/**/*.conf"]);
        assert!(deep.matches("/srv/a.conf"));
        assert!(deep.matches("/srv/x/y/a.conf"));
        assert!(!deep.matches("/etc/a.conf"));
    }

    #[test]
    fn a_relative_path_pattern_matches_the_last_components() {
        let notes = matcher(&["ann/*.txt"]);
        assert!(notes.matches("/home/ann/notes.txt"));
        assert!(notes.matches("/ann/todo.txt"));
        assert!(!notes.matches("/home/ann/sub/notes.txt"));
        assert!(
            !notes.matches("/home/joanne/notes.txt"),
            "whole components only"
        );
    }

    #[test]
    fn classes_alternatives_and_trailing_slashes() {
        let pictures = matcher(&["*.{jpg,png}", "[ab]?.dat", "cache/"]);
        assert!(pictures.matches("/p/x.png") && pictures.matches("/x.jpg"));
        assert!(pictures.matches("/d/a1.dat") && !pictures.matches("/d/c1.dat"));
        assert!(pictures.matches("/home/ann/cache"));
    }

    #[test]
    fn no_patterns_match_nothing_and_bad_patterns_are_usage_errors() {
        assert!(!PathMatcher::default().matches("/anything"));
        assert!(matcher(&[]).is_empty());
        assert!(matcher(&["*.log", "cache/"]).matches_names_only());
        assert!(!matcher(&["*.log", "ann/*.txt"]).matches_names_only());
        assert!(!matcher(&["/etc"]).matches_names_only());
        let error = PathMatcher::new(&["a[".to_owned()]).unwrap_err();
        assert!(
            matches!(error, Error::Usage(ref text) if text.contains("a[")),
            "{error}"
        );
        assert!(PathMatcher::new(&[String::new()]).is_err());
    }
}
