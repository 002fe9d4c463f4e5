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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::config::DropPolicy;

use super::spool::{Record, SpoolError};
use super::{Limits, Pushed, Stats};

/// Seqs of one stream reserved on disk at a time: a crash leaves a gap of
/// at most this many, and a stream costs one durable write per this many.
pub const SEQ_RESERVE: u64 = 1024;

/// Bookkeeping a message costs beyond its topic and payload.
const OVERHEAD: u64 = 48;

/// Bytes handed to the disk side and not yet written there are held in
/// memory (in the channel to it). A card that stops answering must not let
/// them grow without bound: past this many (or twice `memory_limit`, if
/// more) new messages are dropped and counted until it catches up.
const TRANSIT_FLOOR: u64 = 1 << 20;

/// At most this many records, or [`READ_BYTES`], are read back at once: a
/// long outage's backlog comes back in slices, never all into memory.
const READ_RECORDS: usize = 64;
const READ_BYTES: u64 = 256 << 10;

pub(crate) fn size_of(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64 + OVERHEAD
}

/// What the queue needs done on disk, in order.
#[derive(Debug)]
pub enum SpoolOp {
    /// Write these records (they reach the kernel at once and are made
    /// durable by the disk side's next group sync). The queue no longer
    /// holds them: a record the disk refuses comes back in
    /// [`SpoolDone::Unwritten`].
    Write(Vec<Record>),
    /// These ids were acknowledged or dropped.
    Forget(Vec<u64>),
    /// Send these records back ([`SpoolDone::Read`]).
    Read(Vec<u64>),
    /// Reserve each stream's seqs up to the value, durably, and answer
    /// [`SpoolDone::Reserved`] with `epoch`.
    Reserve {
        seqs: BTreeMap<String, u64>,
        epoch: u64,
    },
    /// Write the exact seqs durably, then void every reservation: from
    /// here on each seq handed out is in a record on disk (an outage) or
    /// nothing more is handed out (a stop).
    Release(BTreeMap<String, u64>),
}

/// What the disk did with an op, in the order of the ops.
#[derive(Debug)]
pub enum SpoolDone {
    /// A [`SpoolOp::Write`] reached the kernel whole.
    Written,
    /// Records a [`SpoolOp::Write`] could not take (a full or failing
    /// disk): they are kept in memory instead. Answers the write, like
    /// [`SpoolDone::Written`]; its other records reached the kernel.
    Unwritten {
        records: Vec<Record>,
        error: SpoolError,
    },
    /// Records read back; `missing` ones could not be read (the spool was
    /// damaged under us, or the disk fails) and are counted as dropped.
    Read {
        records: Vec<Record>,
        missing: Vec<u64>,
        error: Option<SpoolError>,
    },
    /// A [`SpoolOp::Reserve`] is durable, or failed (`error`): messages go
    /// out anyway, since holding them would lose them, and a crash may
    /// then reuse a seq.
    Reserved {
        seqs: BTreeMap<String, u64>,
        epoch: u64,
        error: Option<SpoolError>,
    },
    /// Anything else that failed: a group sync, a forget, a release, an
    /// automatic compaction. The state is unchanged; the words go to the log.
    Failed(SpoolError),
}

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

/// The byte counts, kept in this one place: every message is counted in
/// `total` from push until it leaves, and in `memory` while its bytes are
/// in this process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    total: u64,
    memory: u64,
}

impl Tally {
    fn add(&mut self, size: u64, in_memory: bool) {
        self.total = self.total.saturating_add(size);
        if in_memory {
            self.memory = self.memory.saturating_add(size);
        }
    }

    fn remove(&mut self, size: u64, in_memory: bool) {
        debug_assert!(self.total >= size, "{self:?} - {size}");
        self.total = self.total.saturating_sub(size);
        if in_memory {
            self.spilled(size);
        }
    }

    /// The bytes stay counted but leave memory (the disk holds them).
    fn spilled(&mut self, size: u64) {
        debug_assert!(self.memory >= size, "{self:?} - {size}");
        self.memory = self.memory.saturating_sub(size);
    }

    fn loaded_back(&mut self, size: u64) {
        self.memory = self.memory.saturating_add(size);
    }
}

/// A stream (topic) by number, so per-message bookkeeping holds no string.
type StreamId = u32;

/// The streams with messages waiting, and their messages oldest first
/// (who pays when the outbox is full). A stream is forgotten when its last
/// message leaves, so a flood of distinct topics (results for made-up
/// command names) costs nothing after.
#[derive(Debug, Default)]
struct Streams {
    ids: HashMap<String, StreamId>,
    names: HashMap<StreamId, String>,
    waiting: HashMap<StreamId, VecDeque<u64>>,
    next: StreamId,
}

impl Streams {
    fn id(&mut self, name: &str) -> StreamId {
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

    fn push_back(&mut self, stream: StreamId, id: u64) {
        self.waiting.entry(stream).or_default().push_back(id);
    }

    fn push_front(&mut self, stream: StreamId, id: u64) {
        self.waiting.entry(stream).or_default().push_front(id);
    }

    fn remove(&mut self, stream: StreamId, id: u64) {
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
    fn oldest(&self, name: &str) -> Option<u64> {
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
    fn count(&self) -> usize {
        self.names.len().max(self.ids.len()).max(self.waiting.len())
    }
}

/// Seq reservations: a message carrying a seq leaves only once the spool
/// has that seq reserved durably, so a kill -9 cannot let the next run hand
/// the same seq to another reading.
#[derive(Debug, Default)]
struct Reservations {
    /// Asked of the disk, per stream: reserved up to here once answered.
    asked: HashMap<String, u64>,
    /// Streams that carried a seq in this run, asked for again at once on
    /// every reconnect (not every stream a spool ever named: an old or
    /// crafted spool may name any number).
    used: BTreeSet<String>,
    /// Answered.
    durable: HashMap<String, u64>,
    /// Raised by every release, so an answer to a reservation the release
    /// voided is not taken for a live one.
    epoch: u64,
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

    /// Asks for the next block of `stream`'s seqs once `seq` is within half
    /// a block of the end of what was asked, so the answer is normally
    /// back long before a message needs it.
    fn reserve_ahead(&mut self, stream: &str, seq: u64) {
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
    fn reserved(&self, record: &Record, on_disk: bool) -> bool {
        match &record.stream {
            Some((name, seq)) if self.spool && !on_disk => self
                .reservations
                .durable
                .get(name)
                .is_some_and(|upto| seq <= upto),
            _ => true,
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

    /// Asks for the next slice of messages that are only on disk, from the
    /// front of the queue.
    fn read_ahead(&mut self) {
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

    fn release(&mut self) {
        if !self.spool {
            return;
        }
        self.reservations.epoch += 1;
        self.reservations.asked.clear();
        self.reservations.durable.clear();
        self.op(SpoolOp::Release(self.seqs.clone()));
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

    /// Whether `size` more bytes for the disk would put it too far behind.
    fn disk_behind(&self, size: u64) -> bool {
        let limit = self
            .limits
            .memory_limit
            .saturating_mul(2)
            .max(TRANSIT_FLOOR);
        self.transit_bytes.saturating_add(size) > limit
    }

    fn write_answered(&mut self) {
        let bytes = self.transit.pop_front().unwrap_or(0);
        self.transit_bytes = self.transit_bytes.saturating_sub(bytes);
    }

    /// Bytes handed to the disk side and not yet written there.
    pub fn transit_bytes(&self) -> u64 {
        self.transit_bytes
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

    fn loaded(&mut self, record: Record) {
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
    fn unreadable(&mut self, id: u64) {
        if let Some(Waiting::Disk { loading: true, .. }) = self.waiting.get(&id) {
            self.drop_waiting(id);
            self.stats.dropped += 1;
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

    /// The ops to apply to the spool, in order; consecutive writes and
    /// forgets are merged into one.
    pub fn take_ops(&mut self) -> Vec<SpoolOp> {
        std::mem::take(&mut self.ops)
    }

    fn op(&mut self, op: SpoolOp) {
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
    pub fn memory_bytes(&self) -> u64 {
        self.bytes.memory
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    /// Streams with messages waiting (each costs a little memory).
    pub fn stream_count(&self) -> usize {
        self.streams.count()
    }

    /// `outbox.max_bytes`, for the words that report a drop.
    pub fn max_bytes(&self) -> u64 {
        self.limits.max_bytes
    }
}

/// A message's size as kept per disk-only message; sizes are bounded far
/// below 4 GiB by the spool's frame limit, and saturate if not.
fn size_u32(size: u64) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
