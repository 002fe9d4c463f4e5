//! The [`Streams`] with messages waiting, by number, and who pays when the
//! outbox is full. Ids only: the messages themselves are the queue's.
//!
//! It must not know bytes, the disk or seqs.

use std::collections::{HashMap, VecDeque};

/// A stream (topic) by number, so per-message bookkeeping holds no string.
pub(super) type StreamId = u32;

/// The streams with messages waiting, and their messages oldest first
/// (who pays when the outbox is full). A stream is forgotten when its last
/// message leaves, so a flood of distinct topics (results for made-up
/// command names) costs nothing after.
#[derive(Debug, Default)]
pub(super) struct Streams {
    ids: HashMap<String, StreamId>,
    names: HashMap<StreamId, String>,
    waiting: HashMap<StreamId, VecDeque<u64>>,
    next: StreamId,
}

impl Streams {
    pub(super) fn id(&mut self, name: &str) -> StreamId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // Ids are reused after a wrap; skip any still naming a stream.
        let mut id = self.next;
        while self.names.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next = id.wrapping_add(1);
        self.ids.insert(name.to_string(), id);
        self.names.insert(id, name.to_string());
        id
    }

    pub(super) fn push_back(&mut self, stream: StreamId, id: u64) {
        self.waiting.entry(stream).or_default().push_back(id);
    }

    pub(super) fn push_front(&mut self, stream: StreamId, id: u64) {
        self.waiting.entry(stream).or_default().push_front(id);
    }

    pub(super) fn remove(&mut self, stream: StreamId, id: u64) {
        if let Some(ids) = self.waiting.get_mut(&stream) {
            if ids.front() == Some(&id) {
                ids.pop_front();
            } else {
                ids.retain(|i| *i != id);
            }
            if ids.is_empty() {
                self.waiting.remove(&stream);
                if let Some(name) = self.names.remove(&stream) {
                    self.ids.remove(&name);
                }
            }
        }
    }

    /// The oldest waiting message of `name`, or, if it has none waiting,
    /// of the stream holding the most messages.
    pub(super) fn oldest(&self, name: &str) -> Option<u64> {
        let own = self
            .ids
            .get(name)
            .and_then(|s| self.waiting.get(s))
            .and_then(|ids| ids.front());
        if let Some(id) = own {
            return Some(*id);
        }
        self.waiting
            .values()
            .max_by_key(|ids| ids.len())
            .and_then(|ids| ids.front().copied())
    }

    /// Streams known; every map agrees once messages have left.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.names.len().max(self.ids.len()).max(self.waiting.len())
    }
}
