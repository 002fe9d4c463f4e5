//! Where each key's value came from: a line of the file, a command-line
//! flag, or the default. Every check reports through [`Origins::invalid`],
//! so each error names the place a person has to edit.
//!
//! It knows key paths and the file's layout; it must not know what any key
//! means (the sections' checks do).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Place};
use super::source::{Layout, Step};

/// `input[1].pin` → key `input`, index 1, key `pin`.
fn steps_of(key: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        match part.split_once('[') {
            Some((name, index)) => {
                steps.push(Step::Key(name));
                if let Ok(i) = index.trim_end_matches(']').parse() {
                    steps.push(Step::Index(i));
                }
            }
            None => steps.push(Step::Key(part)),
        }
    }
    steps
}

/// Where each key's value came from, to point errors at the right place.
pub(super) struct Origins<'t> {
    file: Option<PathBuf>,
    layout: Layout<'t>,
    /// Key → the flag that set it.
    flags: HashMap<&'static str, &'static str>,
}

impl<'t> Origins<'t> {
    /// `file` is `None` for a config made without one (defaults and flags).
    pub(super) fn new(
        file: Option<&Path>,
        layout: Layout<'t>,
        flags: HashMap<&'static str, &'static str>,
    ) -> Self {
        Origins {
            file: file.map(Path::to_path_buf),
            layout,
            flags,
        }
    }
}

impl Origins<'_> {
    /// Whether a command-line flag set `key` (rather than the file).
    pub(super) fn set_by_flag(&self, key: &str) -> bool {
        self.flags.contains_key(key)
    }

    /// Whether there is a config file (relative paths in it are read from its folder).
    pub(super) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    fn place(&self, key: &str) -> Place {
        if let Some(flag) = self.flags.get(key) {
            return Place::Flag(flag);
        }
        match &self.file {
            Some(path) => {
                let steps = steps_of(key);
                Place::File {
                    path: path.clone(),
                    line: self.layout.line_of_path(&steps),
                }
            }
            None => Place::Default,
        }
    }

    /// The error for a bad value of `key`, placed where it was set.
    pub(super) fn invalid(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            place: self.place(key),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// Relative paths in the file are relative to the file's folder, as a
    /// person reading the file would expect; on the command line, to the
    /// working directory.
    pub(super) fn resolve(&self, key: &str, path: &Path) -> PathBuf {
        match (&self.file, self.flags.contains_key(key)) {
            (Some(file), false) if path.is_relative() => file
                .parent()
                .map_or_else(|| path.to_path_buf(), |dir| dir.join(path)),
            _ => path.to_path_buf(),
        }
    }

    /// Where `key` was set, in words (`--cafile`, or `broker.tls.ca_file in FILE line N`).
    pub(super) fn origin_words(&self, key: &str) -> String {
        match self.place(key) {
            Place::Flag(flag) => flag.to_string(),
            place => format!("{key} in {place}"),
        }
    }
}
