//! The ops on their way to the disk side: merged as they are made, taken
//! in order by [`Queue::take_ops`], and the bytes of writes handed over
//! and not yet answered, which bound how far behind the disk may fall.
//!
//! It must not know what the ops are for, or how the disk applies them.

use super::{Queue, SpoolOp, size_of};

/// Bytes handed to the disk side and not yet written there are held in
/// memory (in the channel to it). A card that stops answering must not let
/// them grow without bound: past this many (or twice `memory_limit`, if
/// more) new messages are dropped and counted until it catches up.
pub(super) const TRANSIT_FLOOR: u64 = 1 << 20;

impl Queue {
    /// Whether `size` more bytes for the disk would put it too far behind.
    pub(super) fn disk_behind(&self, size: u64) -> bool {
        let limit = self
            .limits
            .memory_limit
            .saturating_mul(2)
            .max(TRANSIT_FLOOR);
        self.transit_bytes.saturating_add(size) > limit
    }

    pub(super) fn write_answered(&mut self) {
        let bytes = self.transit.pop_front().unwrap_or(0);
        self.transit_bytes = self.transit_bytes.saturating_sub(bytes);
    }

    /// Bytes handed to the disk side and not yet written there.
    #[cfg(test)]
    pub fn transit_bytes(&self) -> u64 {
        self.transit_bytes
    }

    /// The ops to apply to the spool, in order; consecutive writes and
    /// forgets are merged into one.
    pub fn take_ops(&mut self) -> Vec<SpoolOp> {
        std::mem::take(&mut self.ops)
    }

    pub(super) fn op(&mut self, op: SpoolOp) {
        if !self.spool {
            return;
        }
        if let SpoolOp::Write(records) = &op {
            let bytes = records
                .iter()
                .map(|r| size_of(&r.topic, &r.payload))
                .sum::<u64>();
            self.transit_bytes = self.transit_bytes.saturating_add(bytes);
            match (self.ops.last(), self.transit.back_mut()) {
                // Merged below into the write op this entry stands for.
                (Some(SpoolOp::Write(_)), Some(last)) => *last += bytes,
                _ => self.transit.push_back(bytes),
            }
        }
        match (self.ops.last_mut(), op) {
            (Some(SpoolOp::Write(last)), SpoolOp::Write(more)) => last.extend(more),
            (Some(SpoolOp::Forget(last)), SpoolOp::Forget(more)) => last.extend(more),
            (_, op) => self.ops.push(op),
        }
    }
}
