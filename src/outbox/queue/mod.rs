//! The outbox's state and nothing else: which messages wait (in memory, or
//! only on disk), which are in flight, every stream's seq and reservation,
//! and the byte counts. Like rumqttc's `MqttState` beside its event loop, it
//! performs no I/O: every change the spool on disk must follow comes out of
//! [`Queue::take_ops`] as a [`SpoolOp`], and what the disk did comes back
//! through [`Queue::on_done`]. Its tests need no disk.
//!
//! It must not know files, threads, time beyond the `now_ms` it is given,
//! MQTT, or the agent. It trusts the disk side to apply ops in the order
//! they were taken and to answer in that order.

mod ops;
mod read_back;
mod reservations;
mod streams;
mod tally;
mod transit;

use std::collections::{BTreeMap, VecDeque};

use crate::config::DropPolicy;

use super::spool::{Record, SpoolError};
use super::{Limits, Pushed, Stats};

pub use ops::SpoolDone;
pub(crate) use ops::SpoolOp;
use reservations::Reservations;
pub use reservations::SEQ_RESERVE;
use streams::{StreamId, Streams};
pub(crate) use tally::size_of;
use tally::{Tally, size_u32};

/// Where a waiting message is.
#[derive(Debug)]
enum Waiting {
    /// In memory; `on_disk` when the spool has a copy too (read back, or
    /// written and kept), so leaving costs a forget.
    Memory { record: Box<Record>, on_disk: bool },
    /// Only on disk: its size and stream, to account without reading it.
    /// Kept small: a long outage holds one of these per message.
    Disk {
        size: u32,
        stream: StreamId,
        /// A [`SpoolOp::Read`] for it is on its way.
        loading: bool,
    },
}

#[derive(Debug)]
struct Flying {
    record: Record,
    /// Also in the spool, so the ack must remove it there.
    on_disk: bool,
}

pub struct Queue {
    limits: Limits,
    /// Whether there is a spool to write to at all.
    spool: bool,
    /// Not yet handed to the link, by id (= creation order).
    waiting: BTreeMap<u64, Waiting>,
    streams: Streams,
    in_flight: BTreeMap<u64, Flying>,
    next_id: u64,
    seqs: BTreeMap<String, u64>,
    reservations: Reservations,
    online: bool,
    bytes: Tally,
    ops: Vec<SpoolOp>,
    /// Bytes of each [`SpoolOp::Write`] taken and not yet answered, oldest
    /// first (one entry per write op), and their sum.
    transit: VecDeque<u64>,
    transit_bytes: u64,
    stats: Stats,
}

impl Queue {
    /// An empty queue whose ids start at `next_id` and seqs at `seqs`
    /// (what the spool recovered); `spool` says whether there is a disk.
    pub fn new(limits: Limits, spool: bool, next_id: u64, seqs: BTreeMap<String, u64>) -> Queue {
        Queue {
            limits,
            spool,
            waiting: BTreeMap::new(),
            streams: Streams::default(),
            in_flight: BTreeMap::new(),
            next_id,
            seqs,
            reservations: Reservations::default(),
            online: false,
            bytes: Tally::default(),
            ops: Vec::new(),
            transit: VecDeque::new(),
            transit_bytes: 0,
            stats: Stats::default(),
        }
    }

    /// Queues messages an earlier run left on disk (in id order), dropping
    /// by policy those over `max_bytes` together (a spool left by a run
    /// with a larger `outbox.max_bytes`, or a file put there by hand), as
    /// [`Queue::push`] would have had they arrived one by one. Returns how
    /// many were kept and dropped, with their bytes.
    pub fn recover(&mut self, records: &[Record]) -> ((usize, u64), (usize, u64)) {
        let sizes: Vec<u64> = records
            .iter()
            .map(|r| size_of(&r.topic, &r.payload))
            .collect();
        let mut total = sizes.iter().fold(0u64, |a, b| a.saturating_add(*b));
        let mut keep = vec![true; records.len()];
        let mut order: Box<dyn Iterator<Item = usize>> = match self.limits.policy {
            DropPolicy::DropOldest => Box::new(0..records.len()),
            DropPolicy::DropNewest => Box::new((0..records.len()).rev()),
        };
        while total > self.limits.max_bytes {
            let Some(i) = order.next() else { break };
            keep[i] = false;
            total = total.saturating_sub(sizes[i]);
        }
        let (mut kept, mut dropped) = ((0, 0), (0, 0));
        let mut forget = Vec::new();
        for ((record, size), keep) in records.iter().zip(sizes).zip(keep) {
            self.next_id = self.next_id.max(record.id.saturating_add(1));
            if !keep {
                forget.push(record.id);
                self.stats.dropped += 1;
                dropped = (dropped.0 + 1, dropped.1 + size);
                continue;
            }
            kept = (kept.0 + 1, kept.1 + size);
            self.bytes.add(size, false);
            let stream = self.streams.id(&record.topic);
            self.streams.push_back(stream, record.id);
            self.waiting.insert(
                record.id,
                Waiting::Disk {
                    size: size_u32(size),
                    stream,
                    loading: false,
                },
            );
        }
        if !forget.is_empty() {
            self.op(SpoolOp::Forget(forget));
        }
        (kept, dropped)
    }

    /// The next sequence number of `stream`, continuing from earlier runs.
    pub fn next_seq(&mut self, stream: &str) -> u64 {
        let seq = self.seqs.entry(stream.to_string()).or_insert(0);
        *seq += 1;
        *seq
    }

    /// The last sequence number handed out for `stream`, in any run.
    pub fn last_seq(&self, stream: &str) -> Option<u64> {
        self.seqs.get(stream).copied()
    }

    /// Takes a message. `seq` is the stream's sequence number in the
    /// payload, if it has one (from [`Queue::next_seq`]).
    pub fn push(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        seq: Option<u64>,
        now_ms: u64,
    ) -> Pushed {
        let size = size_of(topic, &payload);
        if let Some(seq) = seq {
            let last = self.seqs.entry(topic.to_string()).or_insert(0);
            *last = (*last).max(seq);
            if !self.reservations.used.contains(topic) {
                self.reservations.used.insert(topic.to_string());
            }
            if self.online {
                self.reserve_ahead(topic, seq);
            }
        }
        // Refused for a disk too far behind before anything is evicted for
        // it: evicting frees no room on the disk's side, so a refused
        // message would cost a kept one too. (Evicting only lowers `memory`:
        // a message for memory now still is after.)
        if !self.to_memory(size) && self.disk_behind(size) {
            self.stats.dropped += 1;
            return Pushed::DiskBehind;
        }
        let mut evicted = 0;
        while self.bytes.total.saturating_add(size) > self.limits.max_bytes {
            let victim = match self.limits.policy {
                DropPolicy::DropNewest => None,
                DropPolicy::DropOldest => self.streams.oldest(topic),
            };
            self.stats.dropped += 1;
            match victim {
                Some(id) => {
                    self.drop_waiting(id);
                    evicted += 1;
                }
                None => return Pushed::Dropped,
            }
        }
        let to_memory = self.to_memory(size);
        let record = Record {
            id: self.next_id,
            created_ms: now_ms,
            topic: topic.to_string(),
            payload,
            retain,
            stream: seq.map(|s| (topic.to_string(), s)),
        };
        self.next_id += 1;
        let stream = self.streams.id(topic);
        self.streams.push_back(stream, record.id);
        if to_memory {
            self.bytes.add(size, true);
            self.waiting.insert(
                record.id,
                Waiting::Memory {
                    record: Box::new(record),
                    on_disk: false,
                },
            );
        } else {
            self.bytes.add(size, false);
            self.waiting.insert(
                record.id,
                Waiting::Disk {
                    size: size_u32(size),
                    stream,
                    loading: false,
                },
            );
            self.op(SpoolOp::Write(vec![record]));
        }
        if evicted > 0 {
            Pushed::QueuedDropping(evicted)
        } else {
            Pushed::Queued
        }
    }

    fn drop_waiting(&mut self, id: u64) {
        match self.waiting.remove(&id) {
            Some(Waiting::Memory { record, on_disk }) => {
                self.bytes
                    .remove(size_of(&record.topic, &record.payload), true);
                let stream = self.streams.id(&record.topic);
                self.streams.remove(stream, id);
                if on_disk {
                    self.op(SpoolOp::Forget(vec![id]));
                }
            }
            Some(Waiting::Disk { size, stream, .. }) => {
                self.bytes.remove(u64::from(size), false);
                self.streams.remove(stream, id);
                self.op(SpoolOp::Forget(vec![id]));
            }
            None => {}
        }
    }

    /// The next message to hand to the link, if the window has room; it
    /// stays here, in flight, until [`Queue::acked`]. Messages past
    /// `max_age` are dropped on the way. `None` also while the next one is
    /// being read back or its seq reserved: call again after
    /// [`Queue::on_done`].
    pub fn next_to_send(&mut self, now_ms: u64) -> Option<Record> {
        if !self.online || self.in_flight.len() >= self.limits.window {
            return None;
        }
        let max_age = u64::try_from(self.limits.max_age.as_millis()).unwrap_or(u64::MAX);
        loop {
            let (&id, waiting) = self.waiting.first_key_value()?;
            match waiting {
                Waiting::Disk { loading: true, .. } => return None,
                Waiting::Disk { loading: false, .. } => {
                    self.read_ahead();
                    return None;
                }
                Waiting::Memory { record, on_disk } if !self.reserved(record, *on_disk) => {
                    // Asked for already, normally; if not (it was made
                    // offline and the disk refused it), now.
                    if let Some((name, seq)) = record.stream.clone() {
                        self.reserve_ahead(&name, seq);
                    }
                    return None;
                }
                Waiting::Memory { .. } => {}
            }
            let Some(Waiting::Memory { record, on_disk }) = self.waiting.remove(&id) else {
                return None;
            };
            let stream = self.streams.id(&record.topic);
            self.streams.remove(stream, id);
            if now_ms.saturating_sub(record.created_ms) > max_age {
                self.bytes
                    .remove(size_of(&record.topic, &record.payload), true);
                if on_disk {
                    self.op(SpoolOp::Forget(vec![id]));
                }
                self.stats.expired += 1;
                continue;
            }
            let record = *record;
            self.in_flight.insert(
                id,
                Flying {
                    record: record.clone(),
                    on_disk,
                },
            );
            return Some(record);
        }
    }

    /// The broker acknowledged message `id`.
    pub fn acked(&mut self, id: u64) {
        if self.leave(id) {
            self.stats.acked += 1;
        }
    }

    /// A message from [`Queue::next_to_send`] that can never be sent (the
    /// link refused it as too large); counted as dropped.
    pub fn discard(&mut self, id: u64) {
        if self.leave(id) {
            self.stats.dropped += 1;
        }
    }

    fn leave(&mut self, id: u64) -> bool {
        let Some(flying) = self.in_flight.remove(&id) else {
            return false;
        };
        let record = &flying.record;
        self.bytes
            .remove(size_of(&record.topic, &record.payload), true);
        if flying.on_disk {
            self.op(SpoolOp::Forget(vec![id]));
        }
        true
    }

    /// A message from [`Queue::next_to_send`] the link could not take (its
    /// queue was full): it goes back to the front.
    pub fn requeue(&mut self, id: u64) {
        let Some(Flying { record, on_disk }) = self.in_flight.remove(&id) else {
            return;
        };
        let stream = self.streams.id(&record.topic);
        self.streams.push_front(stream, id);
        self.waiting.insert(
            id,
            Waiting::Memory {
                record: Box::new(record),
                on_disk,
            },
        );
    }

    /// The link is up: messages may be handed to it again, once their
    /// streams' seqs are reserved (asked for here, all at once). Those in
    /// flight when it went down are the link's to resend (it keeps them).
    pub fn online(&mut self) {
        self.online = true;
        if !self.spool {
            return;
        }
        let seqs: BTreeMap<String, u64> = self
            .reservations
            .used
            .iter()
            .filter_map(|name| {
                let seq = self.seqs.get(name)?;
                Some((name.clone(), seq.saturating_add(SEQ_RESERVE)))
            })
            .collect();
        if seqs.is_empty() {
            return;
        }
        for (name, upto) in &seqs {
            self.reservations.asked.insert(name.clone(), *upto);
        }
        self.op(SpoolOp::Reserve {
            seqs,
            epoch: self.reservations.epoch,
        });
    }

    /// The link is down: everything in memory goes to disk, so a crash or
    /// power cut while offline loses nothing, and new messages follow it.
    /// From here on every seq handed out is in a record on disk, so the
    /// reservations are released: a kill -9 while offline then continues
    /// the seqs exactly, without a gap.
    pub fn offline(&mut self) {
        self.online = false;
        self.spill();
        self.release();
    }

    /// At shutdown: every unacknowledged message to disk, then the exact
    /// seqs, as when the link goes down. The disk side's answers then say
    /// what was kept.
    pub fn persist(&mut self) {
        self.offline();
    }

    /// Writes every message that is only in memory to the spool (in flight
    /// ones stay in memory too: the link still holds them); those read
    /// back from disk just leave memory.
    fn spill(&mut self) {
        if !self.spool {
            return;
        }
        let mut records: Vec<Record> = Vec::new();
        for flying in self.in_flight.values_mut().filter(|f| !f.on_disk) {
            flying.on_disk = true;
            records.push(flying.record.clone());
        }
        let in_memory: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| matches!(w, Waiting::Memory { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in in_memory {
            let Some(Waiting::Memory { record, on_disk }) = self.waiting.remove(&id) else {
                continue;
            };
            let size = size_of(&record.topic, &record.payload);
            let stream = self.streams.id(&record.topic);
            self.bytes.spilled(size);
            self.waiting.insert(
                id,
                Waiting::Disk {
                    size: size_u32(size),
                    stream,
                    loading: false,
                },
            );
            if !on_disk {
                records.push(*record);
            }
        }
        if !records.is_empty() {
            records.sort_by_key(|r| r.id);
            self.op(SpoolOp::Write(records));
        }
    }

    /// Applies what the disk did. Returns the error it met, for the log.
    pub fn on_done(&mut self, done: SpoolDone) -> Option<SpoolError> {
        match done {
            SpoolDone::Written => {
                self.write_answered();
                None
            }
            SpoolDone::Unwritten { records, error } => {
                self.write_answered();
                for record in records {
                    self.unwritten(record);
                }
                Some(error)
            }
            SpoolDone::Read {
                records,
                missing,
                error,
            } => {
                for record in records {
                    self.loaded(record);
                }
                for id in missing {
                    self.unreadable(id);
                }
                error
            }
            SpoolDone::Reserved { seqs, epoch, error } => {
                if epoch == self.reservations.epoch {
                    for (name, upto) in seqs {
                        let durable = self.reservations.durable.entry(name).or_insert(0);
                        *durable = (*durable).max(upto);
                    }
                }
                error
            }
            SpoolDone::Failed(error) => Some(error),
        }
    }

    /// Whether a new message of `size` bytes stays in memory rather than
    /// going to disk.
    fn to_memory(&self, size: u64) -> bool {
        !self.spool
            || (self.online && self.bytes.memory.saturating_add(size) <= self.limits.memory_limit)
    }

    /// The disk refused `record`: memory keeps it, unless it left meanwhile.
    fn unwritten(&mut self, record: Record) {
        if let Some(flying) = self.in_flight.get_mut(&record.id) {
            flying.on_disk = false;
            return;
        }
        let id = record.id;
        if let Some(Waiting::Disk { size, .. }) = self.waiting.get(&id) {
            self.bytes.loaded_back(u64::from(*size));
            self.waiting.insert(
                id,
                Waiting::Memory {
                    record: Box::new(record),
                    on_disk: false,
                },
            );
        }
    }

    /// The disk side is gone (its thread died): what only it held is lost,
    /// and the queue works from memory from here on.
    pub fn spool_lost(&mut self) -> usize {
        self.spool = false;
        self.ops.clear();
        self.transit.clear();
        self.transit_bytes = 0;
        let disk_only: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| matches!(w, Waiting::Disk { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in &disk_only {
            self.drop_waiting(*id);
            self.stats.dropped += 1;
        }
        self.ops.clear();
        for flying in self.in_flight.values_mut() {
            flying.on_disk = false;
        }
        for waiting in self.waiting.values_mut() {
            if let Waiting::Memory { on_disk, .. } = waiting {
                *on_disk = false;
            }
        }
        disk_only.len()
    }

    /// Messages whose copy is on disk (so kept if the process ends now and
    /// the disk side has synced), and all messages not acknowledged.
    pub fn on_disk_and_queued(&self) -> (usize, usize) {
        let on_disk = self
            .waiting
            .values()
            .filter(|w| {
                matches!(
                    w,
                    Waiting::Disk { .. } | Waiting::Memory { on_disk: true, .. }
                )
            })
            .count()
            + self.in_flight.values().filter(|f| f.on_disk).count();
        (on_disk, self.waiting.len() + self.in_flight.len())
    }

    /// The counters; `spool_file_bytes` is the disk side's to fill in.
    pub fn stats(&self) -> Stats {
        let spooled = self
            .waiting
            .values()
            .filter(|w| matches!(w, Waiting::Disk { .. }))
            .count();
        Stats {
            queued: self.waiting.len() + self.in_flight.len(),
            queued_bytes: self.bytes.total,
            in_flight: self.in_flight.len(),
            spooled,
            ..self.stats.clone()
        }
    }

    /// Bytes of messages held in memory (waiting or in flight).
    #[cfg(test)]
    pub fn memory_bytes(&self) -> u64 {
        self.bytes.memory
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    /// Streams with messages waiting (each costs a little memory).
    #[cfg(test)]
    pub fn stream_count(&self) -> usize {
        self.streams.count()
    }

    /// `outbox.max_bytes`, for the words that report a drop.
    pub fn max_bytes(&self) -> u64 {
        self.limits.max_bytes
    }
}

#[cfg(test)]
mod tests;
