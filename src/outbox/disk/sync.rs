//! The sync thread: a disk sync can take hundreds of milliseconds on an SD
//! card, so [`Disk`] hands each one, on a second handle of the file, to a
//! thread of its own, and holds the answers that must wait for it
//! (reservations) until a sync that began after them has ended.
//!
//! It must not know what was written, or the ops and their order: only
//! tickets, held answers and whether another sync is wanted.

use std::fs::File;
use std::sync::mpsc;
use std::time::Instant;

use super::thread::Message;
use super::{Disk, SpoolDone, SpoolError};
use crate::outbox::spool::Spool;

/// Syncs run by a thread of their own, and the answers waiting for them.
pub(super) struct Syncs {
    pub(super) to: mpsc::Sender<(u64, File)>,
    /// The sync running, by ticket (they are numbered as they start).
    pub(super) running: Option<u64>,
    /// Another sync is wanted once the running one ends: something was
    /// written after it began.
    pub(super) again: bool,
    pub(super) next: u64,
    /// Answers that may go only once a sync numbered at least this ended.
    pub(super) held: Vec<(u64, SpoolDone)>,
}

impl Disk {
    /// Like [`Disk::new`], with syncs on a thread of their own that reports
    /// each one to `back` as [`Message::Synced`].
    pub(super) fn with_sync_thread(spool: Spool, back: mpsc::Sender<Message>) -> Disk {
        Disk::with_syncing(spool, back, File::sync_data)
    }

    /// [`Disk::with_sync_thread`] with the sync step given (a test holds
    /// it to play a card that takes its time).
    pub(super) fn with_syncing(
        spool: Spool,
        back: mpsc::Sender<Message>,
        sync: fn(&File) -> std::io::Result<()>,
    ) -> Disk {
        let (to, requests) = mpsc::channel::<(u64, File)>();
        let started = std::thread::Builder::new()
            .name("pinpost-sync".into())
            .stack_size(64 << 10)
            .spawn(move || {
                for (ticket, file) in requests {
                    let error = sync(&file).err();
                    if back.send(Message::Synced { ticket, error }).is_err() {
                        return;
                    }
                }
            });
        let mut disk = Disk::new(spool);
        if started.is_ok() {
            disk.spool.defer_syncs();
            disk.syncs = Some(Syncs {
                to,
                running: None,
                again: false,
                next: 0,
                held: Vec::new(),
            });
        }
        disk
    }

    /// Starts a sync on the sync thread, or marks one wanted after the
    /// running one; without a sync thread, syncs here.
    pub(super) fn start_sync(&mut self, done: &mut Vec<SpoolDone>) {
        let Some(syncs) = self.syncs.as_mut() else {
            self.sync_here(done);
            return;
        };
        if syncs.running.is_some() {
            syncs.again = true;
            return;
        }
        let ticket = syncs.next;
        let sent = self
            .spool
            .sync_handle()
            .ok()
            .is_some_and(|file| syncs.to.send((ticket, file)).is_ok());
        if sent {
            syncs.next += 1;
            syncs.running = Some(ticket);
        } else {
            // No second handle, or the sync thread is gone: here, then.
            self.sync_here(done);
        }
    }

    /// Syncs on this thread, and lets every held answer go.
    pub(super) fn sync_here(&mut self, done: &mut Vec<SpoolDone>) -> bool {
        let synced = match self.spool.sync() {
            Ok(()) => {
                self.dirty = false;
                true
            }
            Err(e) => {
                done.push(SpoolDone::Failed(e));
                false
            }
        };
        if let Some(syncs) = self.syncs.as_mut() {
            // Every write so far is covered (or the disk failed, and
            // holding the answers would hold the messages for good).
            syncs.next += 1;
            done.extend(syncs.held.drain(..).map(|(_, answer)| answer));
        }
        synced
    }

    /// The sync thread finished sync `ticket`.
    pub(super) fn synced(
        &mut self,
        ticket: u64,
        error: Option<std::io::Error>,
        done: &mut Vec<SpoolDone>,
    ) {
        let Some(syncs) = self.syncs.as_mut() else {
            return;
        };
        if syncs.running == Some(ticket) {
            syncs.running = None;
        }
        if let Some(err) = error {
            // Written, not durable: a commit tries again.
            self.dirty = true;
            self.since.get_or_insert_with(Instant::now);
            done.push(SpoolDone::Failed(SpoolError::Io {
                doing: "sync to disk the outbox spool",
                path: self.spool.path().to_path_buf(),
                err,
            }));
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut syncs.held)
            .into_iter()
            .partition(|(needs, _)| *needs <= ticket);
        syncs.held = waiting;
        done.extend(ready.into_iter().map(|(_, answer)| answer));
        if std::mem::take(&mut syncs.again) {
            self.start_sync(done);
        }
    }
}
