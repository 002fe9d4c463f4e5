//! What a message costs in bytes, and the [`Tally`] that counts them: every
//! message in `total` from push until it leaves, in `memory` while its
//! bytes are in this process. The queue decides when bytes move; this
//! only keeps the sums straight.
//!
//! It must not know where a message is or why it moves.

/// Bookkeeping a message costs beyond its topic and payload.
const OVERHEAD: u64 = 48;

pub(crate) fn size_of(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64 + OVERHEAD
}

/// The byte counts, kept in this one place: every message is counted in
/// `total` from push until it leaves, and in `memory` while its bytes are
/// in this process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) total: u64,
    pub(super) memory: u64,
}

impl Tally {
    pub(super) fn add(&mut self, size: u64, in_memory: bool) {
        self.total = self.total.saturating_add(size);
        if in_memory {
            self.memory = self.memory.saturating_add(size);
        }
    }

    pub(super) fn remove(&mut self, size: u64, in_memory: bool) {
        debug_assert!(self.total >= size, "{self:?} - {size}");
        self.total = self.total.saturating_sub(size);
        if in_memory {
            self.spilled(size);
        }
    }

    /// The bytes stay counted but leave memory (the disk holds them).
    pub(super) fn spilled(&mut self, size: u64) {
        debug_assert!(self.memory >= size, "{self:?} - {size}");
        self.memory = self.memory.saturating_sub(size);
    }

    pub(super) fn loaded_back(&mut self, size: u64) {
        self.memory = self.memory.saturating_add(size);
    }
}

/// A message's size as kept per disk-only message; sizes are bounded far
/// below 4 GiB by the spool's frame limit, and saturate if not.
pub(super) fn size_u32(size: u64) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}
