//! Read-back: messages that are only on disk come back into memory from
//! the front of the queue, a bounded slice at a time, and those that
//! cannot be read are counted as dropped.
//!
//! It must not know seqs, reservations or the link.

use super::super::spool::Record;
use super::{Queue, SpoolOp, Waiting};

/// At most this many records, or [`READ_BYTES`], are read back at once: a
/// long outage's backlog comes back in slices, never all into memory.
const READ_RECORDS: usize = 64;
const READ_BYTES: u64 = 256 << 10;

impl Queue {
    /// Asks for the next slice of messages that are only on disk, from the
    /// front of the queue.
    pub(super) fn read_ahead(&mut self) {
        let mut ids = Vec::new();
        let mut bytes = 0u64;
        for (id, waiting) in self.waiting.iter_mut() {
            let Waiting::Disk { size, loading, .. } = waiting else {
                break;
            };
            if *loading || ids.len() >= READ_RECORDS || bytes >= READ_BYTES {
                break;
            }
            *loading = true;
            bytes += u64::from(*size);
            ids.push(*id);
        }
        if !ids.is_empty() {
            self.op(SpoolOp::Read(ids));
        }
    }

    pub(super) fn loaded(&mut self, record: Record) {
        let id = record.id;
        if let Some(Waiting::Disk {
            size,
            loading: true,
            ..
        }) = self.waiting.get(&id)
        {
            self.bytes.loaded_back(u64::from(*size));
            self.waiting.insert(
                id,
                Waiting::Memory {
                    record: Box::new(record),
                    on_disk: true,
                },
            );
        }
    }

    /// Could not be read back: counted as dropped rather than retried
    /// forever.
    pub(super) fn unreadable(&mut self, id: u64) {
        if let Some(Waiting::Disk { loading: true, .. }) = self.waiting.get(&id) {
            self.drop_waiting(id);
            self.stats.dropped += 1;
        }
    }
}
