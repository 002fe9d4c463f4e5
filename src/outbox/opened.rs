//! What a start found on disk ([`Opened`]), and why an outbox may have no
//! spool at all ([`Unavailable`]), in the words the agent logs.

use std::path::{Path, PathBuf};

use super::{SpoolError, spool};

/// What a start found on disk.
#[derive(Debug, Default)]
pub struct Opened {
    /// Unacknowledged messages from earlier runs, to be sent first.
    pub replayed: usize,
    /// Bytes of the replayed messages.
    pub replayed_bytes: u64,
    /// Damaged parts of the spool that were skipped, in one sentence
    /// however many there were (a hostile file can hold millions).
    pub damage: Option<String>,
    /// Why the spool could not be used (messages then live in memory only).
    pub unavailable: Option<Unavailable>,
    /// The last run ended without a clean stop, so seq numbers continue
    /// after those it had reserved: subscribers see a gap, never a reuse.
    pub unclean: bool,
    /// The last run did not stop cleanly and the machine has restarted
    /// since (a power cut or a crash of the system): what it had not yet
    /// synced may be lost, so seq numbers skip [`super::SEQ_RESERVE`] per topic
    /// and a lost reading shows as a gap, never as a reused seq.
    pub power_cut: bool,
    /// The spool's boot mark could not be written: after a power cut seqs
    /// cannot be told apart from a kill's, and may repeat.
    pub mark_problem: Option<String>,
    /// Messages found in the spool but dropped at once, by `policy`,
    /// because together they were over `max_bytes` (a spool left by a run
    /// with a larger `outbox.max_bytes`, or a file put there by hand).
    pub dropped: usize,
    /// Bytes of the dropped messages.
    pub dropped_bytes: u64,
}

/// Why an outbox has no spool; it then keeps messages in memory only.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The spool's directory could not be made (or made private).
    #[error(
        "cannot create the outbox spool directory {}: {}",
        dir.display(),
        crate::words::io_words(err)
    )]
    CreateDir {
        /// The directory (`outbox.path`).
        dir: PathBuf,
        /// What the system said.
        err: std::io::Error,
    },
    /// The lock file could not be opened.
    #[error("cannot open {}: {}", path.display(), crate::words::io_words(err))]
    OpenLock {
        /// The lock file, `outbox.lock` in the spool's directory.
        path: PathBuf,
        /// What the system said.
        err: std::io::Error,
    },
    /// Another process holds the spool's lock.
    #[error(
        "another pinpost is using the outbox spool {}; give each agent its own outbox.path",
        dir.display()
    )]
    InUse {
        /// The directory (`outbox.path`).
        dir: PathBuf,
    },
    /// The spool file could not be opened or recovered.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The spool's thread could not be started.
    #[error(
        "cannot start the outbox spool's thread: {}",
        crate::words::io_words(.0)
    )]
    Thread(std::io::Error),
}

/// The spool's damage in one sentence, however many regions there were.
pub(super) fn damage_words(recovered: &spool::Recovered, path: &Path) -> Option<String> {
    let first = recovered.skipped.first()?;
    let mut words = format!(
        "{} damaged bytes at offset {} of {} ({}) were skipped",
        first.bytes,
        first.offset,
        path.display(),
        first.why
    );
    let more = recovered.damage.regions.saturating_sub(1);
    if more > 0 {
        words.push_str(&format!(
            ", and {more} more damaged regions, {} bytes in all",
            recovered.damage.bytes
        ));
    }
    Some(words)
}
