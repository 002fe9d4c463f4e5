//! The spool's side of the outbox: applies the queue's [`SpoolOp`]s to the
//! [`Spool`] on a thread of its own, so a slow disk (an SD card's fsync can
//! take hundreds of milliseconds) never stalls the agent's loop: commands
//! are applied, edges published and pings sent while the card works.
//!
//! Writes reach the kernel as they arrive (so they survive a `kill -9`) and
//! are made durable by one sync at most [`SYNC_INTERVAL`] after the first
//! unsynced one (a group commit: a power cut loses at most that much);
//! forgets are grouped the same way. The syncs themselves run on a second
//! thread, on a second handle of the file, so that while a card takes its
//! time the spool's thread goes on writing (what arrives still reaches the
//! kernel at once) and reading (messages read back still leave).
//! Reservations are answered once a sync that began after them has ended;
//! releases, and the stop's last commit, sync before they return. Answers
//! go back in the order of the ops, except reservations, which wait for
//! their sync.
//!
//! It must not know what the messages are, when they should be written or
//! read (the queue decides), or anything of the agent, MQTT or the config.

mod sync;
mod thread;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::queue::{SpoolDone, SpoolOp};
use super::spool::{Record, Spool, SpoolError};

use sync::Syncs;
pub use thread::Answer;
pub(crate) use thread::SpoolThread;

/// How long a write may wait for its sync, and forgets for theirs: one
/// disk sync per interval, not one per message.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// The spool and what it owes the disk.
struct Disk {
    spool: Spool,
    /// `None`: every sync runs here and now (tests, and a failed start of
    /// the sync thread).
    syncs: Option<Syncs>,
    /// Acknowledged or dropped ids not yet forgotten on disk.
    forget: Vec<u64>,
    /// Written but not yet synced.
    dirty: bool,
    /// When the oldest unsynced write or unwritten forget arrived.
    since: Option<Instant>,
}

impl Disk {
    fn new(spool: Spool) -> Disk {
        Disk {
            spool,
            syncs: None,
            forget: Vec::new(),
            dirty: false,
            since: None,
        }
    }

    /// Applies one op; what it did, if anything needs saying, goes to `done`.
    fn apply(&mut self, op: SpoolOp, done: &mut Vec<SpoolDone>) {
        match op {
            SpoolOp::Write(records) => done.push(self.write(records)),
            SpoolOp::Forget(ids) => {
                self.forget.extend(ids);
                self.since.get_or_insert_with(Instant::now);
            }
            SpoolOp::Read(ids) => done.push(self.read(&ids)),
            SpoolOp::Reserve { seqs, epoch } => {
                // One frame and one sync for every stream a reconnect asks
                // for, not one each.
                let error = self.spool.reserve_upto(&seqs).err();
                let answer = SpoolDone::Reserved { seqs, epoch, error };
                match self.syncs.as_mut() {
                    // Durable once a sync that begins from here has ended.
                    Some(syncs)
                        if !matches!(answer, SpoolDone::Reserved { error: Some(_), .. }) =>
                    {
                        syncs.held.push((syncs.next, answer));
                        self.start_sync(done);
                    }
                    _ => done.push(answer),
                }
            }
            SpoolOp::Release(seqs) => {
                if let Err(e) = self.release(&seqs) {
                    done.push(SpoolDone::Failed(e));
                }
            }
        }
        if let Some(e) = self.spool.take_compaction_error() {
            done.push(SpoolDone::Failed(e));
        }
    }

    /// Writes a batch; on failure (a full disk may still take some) as many
    /// as fit, oldest first, and the rest go back.
    fn write(&mut self, records: Vec<Record>) -> SpoolDone {
        let error = match self.spool.write(&records) {
            Ok(()) => {
                self.wrote();
                return SpoolDone::Written;
            }
            Err(e) => e,
        };
        let mut rest = records.into_iter();
        let mut written_any = false;
        let mut unwritten = Vec::new();
        for record in rest.by_ref() {
            if self.spool.write(std::slice::from_ref(&record)).is_err() {
                unwritten.push(record);
                break;
            }
            written_any = true;
        }
        unwritten.extend(rest);
        if written_any {
            self.wrote();
        }
        SpoolDone::Unwritten {
            records: unwritten,
            error,
        }
    }

    fn wrote(&mut self) {
        self.dirty = true;
        self.since.get_or_insert_with(Instant::now);
    }

    fn read(&mut self, ids: &[u64]) -> SpoolDone {
        let mut records = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut error = None;
        for id in ids {
            match self.spool.read(*id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => missing.push(*id),
                Err(e) => {
                    missing.push(*id);
                    error.get_or_insert(e);
                }
            }
        }
        SpoolDone::Read {
            records,
            missing,
            error,
        }
    }

    /// The exact seqs, then the end of the reservations (only once the
    /// exact seqs are on disk, or a crash could reuse seqs).
    fn release(&mut self, seqs: &BTreeMap<String, u64>) -> Result<(), SpoolError> {
        self.spool.checkpoint(seqs)?;
        if self.syncs.is_some() {
            self.spool.sync()?;
        }
        self.spool.close()?;
        if self.syncs.is_some() {
            self.spool.sync()?;
        }
        Ok(())
    }

    /// When [`Disk::commit`] is due, if anything waits for it.
    fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + SYNC_INTERVAL)
    }

    /// The group commit: removes forgotten ids from the spool and starts a
    /// sync of every write (on the sync thread, when there is one). True
    /// when nothing written is left unsynced.
    fn commit(&mut self, done: &mut Vec<SpoolDone>) -> bool {
        if self.syncs.is_none() {
            return self.commit_here(done);
        }
        self.since = None;
        let forgot = !self.forget.is_empty();
        self.forget_now(done);
        if self.dirty || forgot {
            self.dirty = false;
            self.start_sync(done);
        }
        if let Some(e) = self.spool.take_compaction_error() {
            done.push(SpoolDone::Failed(e));
        }
        if !self.forget.is_empty() {
            self.since = Some(Instant::now());
        }
        false
    }

    fn forget_now(&mut self, done: &mut Vec<SpoolDone>) {
        if !self.forget.is_empty() {
            match self.spool.forget(&self.forget) {
                Ok(()) => self.forget.clear(),
                // Kept for the next commit; a full disk may have room then.
                Err(e) => done.push(SpoolDone::Failed(e)),
            }
        }
    }

    /// Commits and syncs on this thread before it returns (the stop, and
    /// tests that wait for it): true when everything written is durable.
    fn commit_here(&mut self, done: &mut Vec<SpoolDone>) -> bool {
        self.since = None;
        self.forget_now(done);
        // Even when the forget failed: what was written must still be made
        // durable. With syncs deferred, frames written since the last sync
        // (forgets, reservations) are not counted in `dirty`: sync anyway.
        if self.dirty || self.syncs.is_some() {
            self.sync_here(done);
        }
        if let Some(e) = self.spool.take_compaction_error() {
            done.push(SpoolDone::Failed(e));
        }
        if !self.forget.is_empty() || self.dirty {
            // Try again later rather than never.
            self.since = Some(Instant::now());
        }
        !self.dirty
    }

    fn file_bytes(&self) -> u64 {
        self.spool.file_bytes()
    }
}

#[cfg(test)]
mod tests;
