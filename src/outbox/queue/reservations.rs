//! Seq reservations: which seqs of each stream are durably reserved, the
//! [`SpoolOp::Reserve`]s that ask for more and the release that voids
//! them. A message carrying a seq leaves only once its seq is reserved.
//!
//! It must not know bytes, read-back or the link.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::super::spool::Record;
use super::{Queue, SpoolOp};

/// Seqs of one stream reserved on disk at a time: a crash leaves a gap of
/// at most this many, and a stream costs one durable write per this many.
pub const SEQ_RESERVE: u64 = 1024;

/// Seq reservations: a message carrying a seq leaves only once the spool
/// has that seq reserved durably, so a kill -9 cannot let the next run hand
/// the same seq to another reading.
#[derive(Debug, Default)]
pub(super) struct Reservations {
    /// Asked of the disk, per stream: reserved up to here once answered.
    pub(super) asked: HashMap<String, u64>,
    /// Streams that carried a seq in this run, asked for again at once on
    /// every reconnect (not every stream a spool ever named: an old or
    /// crafted spool may name any number).
    pub(super) used: BTreeSet<String>,
    /// Answered.
    pub(super) durable: HashMap<String, u64>,
    /// Raised by every release, so an answer to a reservation the release
    /// voided is not taken for a live one.
    pub(super) epoch: u64,
}

impl Queue {
    /// Asks for the next block of `stream`'s seqs once `seq` is within half
    /// a block of the end of what was asked, so the answer is normally
    /// back long before a message needs it.
    pub(super) fn reserve_ahead(&mut self, stream: &str, seq: u64) {
        if !self.spool {
            return;
        }
        let asked = self.reservations.asked.get(stream).copied().unwrap_or(0);
        if seq.saturating_add(SEQ_RESERVE / 2) <= asked {
            return;
        }
        let upto = seq.saturating_add(SEQ_RESERVE - 1);
        self.reservations.asked.insert(stream.to_string(), upto);
        self.op(SpoolOp::Reserve {
            seqs: BTreeMap::from([(stream.to_string(), upto)]),
            epoch: self.reservations.epoch,
        });
    }

    /// Whether `record` may leave as far as seq reservations go: it is in
    /// the spool itself, carries no seq, or its seq is durably reserved.
    pub(super) fn reserved(&self, record: &Record, on_disk: bool) -> bool {
        match &record.stream {
            Some((name, seq)) if self.spool && !on_disk => self
                .reservations
                .durable
                .get(name)
                .is_some_and(|upto| seq <= upto),
            _ => true,
        }
    }

    /// Voids every reservation and asks the disk to write the exact seqs
    /// instead ([`SpoolOp::Release`]).
    pub(super) fn release(&mut self) {
        if !self.spool {
            return;
        }
        self.reservations.epoch += 1;
        self.reservations.asked.clear();
        self.reservations.durable.clear();
        self.op(SpoolOp::Release(self.seqs.clone()));
    }
}
