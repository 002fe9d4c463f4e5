//! What the root helper (`pinpost install-update`, `crate::updater`) left
//! for the agent in its folder (`[update] helper_dir`): how the last
//! install went, to be reported on `update`, and the versions it rolled
//! back, which this device does not fetch again. Read only: the agent may
//! not write there, and reads no more than a small file's worth.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::updater::{OUTCOME_FILE, Outcome, ROLLED_BACK_FILE, RolledBack};
use crate::words::io_words;

const SMALL: u64 = 64 * 1024;

/// The helper's folder, as the agent sees it.
#[derive(Debug, Clone)]
pub(super) struct Helper {
    dir: PathBuf,
    /// The outcome reported last (its time), so each is reported once,
    /// across restarts: kept in `seen_file`, the agent's own.
    seen: Option<String>,
    seen_file: PathBuf,
    /// The outcome file's time and size when last read: it is looked at
    /// every second, and read only when it changed.
    stamp: Option<(Option<SystemTime>, u64)>,
}

impl Helper {
    pub(super) fn new(dir: &Path, seen_file: PathBuf) -> Helper {
        let seen = crate::whole_file::read_small(&seen_file, 128, "a time")
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        Helper {
            dir: dir.to_path_buf(),
            seen,
            seen_file,
            stamp: None,
        }
    }

    /// The helper's outcome, if it is new since the last call.
    pub(super) fn news(&mut self) -> Option<Outcome> {
        let path = self.dir.join(OUTCOME_FILE);
        let meta = std::fs::metadata(&path).ok()?;
        let stamp = (meta.modified().ok(), meta.len());
        if self.stamp == Some(stamp) {
            return None;
        }
        self.stamp = Some(stamp);
        let outcome: Outcome = read(&path)?;
        if self.seen.as_deref() == Some(outcome.ts.as_str()) {
            return None;
        }
        self.seen = Some(outcome.ts.clone());
        // Not synced: after a power cut, an outcome said twice is harmless.
        let tmp = self.seen_file.with_extension("tmp");
        if let Some(dir) = self.seen_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) =
            crate::whole_file::replace(&self.seen_file, &tmp, outcome.ts.as_bytes(), false)
        {
            tracing::debug!(
                "update: cannot keep which outcome was said: {}",
                io_words(&e)
            );
        }
        Some(outcome)
    }

    /// Why `version` was rolled back here, if it was.
    pub(super) fn rolled_back(&self, version: &str) -> Option<String> {
        let list: Vec<RolledBack> = read(&self.dir.join(ROLLED_BACK_FILE))?;
        list.into_iter()
            .find(|r| r.version == version)
            .map(|r| r.reason)
    }
}

fn read<T: for<'de> serde::Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = match crate::whole_file::read_small(path, SMALL, "the install helper's record") {
        Ok(b) => b?,
        Err(e) => {
            tracing::debug!("update: {}", crate::words::io_words(&e));
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                "update: {} cannot be read ({e}); what the install helper did is not reported",
                path.display()
            );
            None
        }
    }
}
