//! The outbox: owns every outgoing message from the moment it is made until
//! the broker acknowledges it, so no reading is lost to a dropped link, a
//! broker restart or a restart of pinpost itself.
//!
//! While the link is up, messages wait in memory (an SD card wears with
//! every write). When the link goes down, or the backlog in memory passes
//! `memory_limit`, they go to the [`spool`] on disk; at shutdown whatever is
//! unacknowledged is written there too, and the next start sends it before
//! anything new. Messages leave in creation order, at most `window` at a
//! time unacknowledged. The whole outbox is bounded by `max_bytes` and
//! `max_age`; when full, the stream that is adding pays (its oldest message,
//! or the new one, by policy), and every drop is counted.
//!
//! Per-stream sequence numbers are handed out here, and survive restarts in
//! the spool, so consumers can see gaps and duplicates.
//!
//! It knows topics as strings and nothing of MQTT packets or rumqttc: the
//! agent moves messages from here to the link and acknowledgements back.

mod crc;
pub mod spool;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::DropPolicy;

use spool::Spool;
pub use spool::{Record, SpoolError};

/// The bounds an outbox keeps.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_limit: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub policy: DropPolicy,
    /// Unacknowledged messages handed to the link at once.
    pub window: usize,
}

/// Counters for the stats message and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages not yet acknowledged (waiting and in flight).
    pub queued: usize,
    pub queued_bytes: u64,
    pub in_flight: usize,
    /// Messages whose only copy is on disk.
    pub spooled: usize,
    /// Size of the spool file.
    pub spool_file_bytes: u64,
    /// Dropped because the outbox was full.
    pub dropped: u64,
    /// Dropped because they were older than `max_age`.
    pub expired: u64,
    pub acked: u64,
}

/// What happened to a message given to [`Outbox::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, after dropping this many older messages of the same stream.
    QueuedDropping(usize),
    /// Not queued: the outbox is full and the policy keeps what it has.
    Dropped,
}

/// What a start found on disk.
#[derive(Debug, Default)]
pub struct Opened {
    /// Unacknowledged messages from earlier runs, to be sent first.
    pub replayed: usize,
    pub replayed_bytes: u64,
    /// Damaged parts of the spool that were skipped, in one sentence
    /// however many there were (a hostile file can hold millions).
    pub damage: Option<String>,
    /// Why the spool could not be used (messages then live in memory only).
    pub unavailable: Option<String>,
    /// The last run ended without a clean stop, so seq numbers continue
    /// after those it had reserved: subscribers see a gap, never a reuse.
    pub unclean: bool,
    /// Messages found in the spool but dropped at once, by `policy`,
    /// because together they were over `max_bytes` (a spool left by a run
    /// with a larger `outbox.max_bytes`, or a file put there by hand).
    pub dropped: usize,
    pub dropped_bytes: u64,
}

/// What [`Outbox::persist`] left on disk at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// Unacknowledged messages durably in the spool, sent first at the
    /// next start.
    pub kept: usize,
    /// Unacknowledged messages the spool could not take (a full or broken
    /// disk, or no spool at all): lost when the process ends.
    pub lost: usize,
    /// Why some were lost, in words.
    pub problem: Option<String>,
}

impl Persisted {
    /// The shutdown's last words about the outbox, if anything was left.
    pub fn words(&self, dir: &Path) -> Option<String> {
        let kept = format!(
            "{} messages the broker has not acknowledged are kept in {} and will be sent first \
             at the next start",
            self.kept,
            dir.display()
        );
        match (self.kept, self.lost) {
            (0, 0) => None,
            (_, 0) => Some(kept),
            (_, lost) => Some(format!(
                "{kept}; {lost} could not be written there and are lost{}",
                self.problem
                    .as_deref()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default()
            )),
        }
    }
}

/// Where a waiting message is.
#[derive(Debug)]
enum Waiting {
    Memory(Box<Record>),
    /// Only on disk: its size and stream, to account without reading it.
    /// Kept small: a long outage holds one of these per message.
    Disk {
        size: u32,
        stream: StreamId,
    },
}

/// A stream (topic) by number, so per-message bookkeeping holds no string.
type StreamId = u32;

#[derive(Debug)]
struct Flying {
    record: Record,
    /// Also in the spool, so the ack must remove it there.
    on_disk: bool,
}

pub struct Outbox {
    limits: Limits,
    dir: PathBuf,
    spool: Option<Spool>,
    /// Held while the spool is ours: two agents writing one log would
    /// corrupt it.
    _lock: Option<std::fs::File>,
    /// Not yet handed to the link, by id (= creation order).
    waiting: BTreeMap<u64, Waiting>,
    /// Ids waiting per stream, oldest first: who pays when full.
    streams: HashMap<StreamId, VecDeque<u64>>,
    /// Names of the streams with messages waiting, both ways. A stream is
    /// forgotten when its last message leaves, so a flood of distinct
    /// topics (results for made-up command names) costs nothing after.
    stream_ids: HashMap<String, StreamId>,
    stream_names: HashMap<StreamId, String>,
    next_stream: StreamId,
    in_flight: BTreeMap<u64, Flying>,
    next_id: u64,
    seqs: BTreeMap<String, u64>,
    online: bool,
    memory_bytes: u64,
    total_bytes: u64,
    /// Ids acknowledged or dropped whose spool entries await [`Outbox::sync`].
    forget: Vec<u64>,
    /// Records written to the spool but not yet made durable.
    dirty: bool,
    stats: Stats,
    /// The last spool failure, reported once by [`Outbox::take_problem`].
    problem: Option<String>,
}

/// Seqs of one stream reserved on disk at a time: a crash leaves a gap of
/// at most this many, and a stream costs one durable write per this many.
pub const SEQ_RESERVE: u64 = 1024;

/// Bookkeeping a message costs beyond its topic and payload.
const OVERHEAD: u64 = 48;

fn size_of(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64 + OVERHEAD
}

/// Which recovered records (in id order) fit `max_bytes` together: the
/// rest are dropped as [`Outbox::push`] would have dropped them had they
/// arrived one by one (the oldest make room, or the newest are refused).
fn fitting_max_bytes(records: &[Record], limits: &Limits) -> Vec<bool> {
    let sizes: Vec<u64> = records
        .iter()
        .map(|r| size_of(&r.topic, &r.payload))
        .collect();
    let mut total = sizes.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let mut keep = vec![true; records.len()];
    let mut order: Box<dyn Iterator<Item = usize>> = match limits.policy {
        DropPolicy::DropOldest => Box::new(0..records.len()),
        DropPolicy::DropNewest => Box::new((0..records.len()).rev()),
    };
    while total > limits.max_bytes {
        let Some(i) = order.next() else { break };
        keep[i] = false;
        total = total.saturating_sub(sizes[i]);
    }
    keep
}

impl Outbox {
    /// Opens the spool in `dir` and queues what earlier runs left there. A
    /// spool that cannot be opened is reported in [`Opened::unavailable`]
    /// and the outbox works from memory alone.
    pub fn open(dir: &Path, limits: Limits) -> (Outbox, Opened) {
        let mut outbox = Outbox {
            limits,
            dir: dir.to_path_buf(),
            spool: None,
            _lock: None,
            waiting: BTreeMap::new(),
            streams: HashMap::new(),
            stream_ids: HashMap::new(),
            stream_names: HashMap::new(),
            next_stream: 0,
            in_flight: BTreeMap::new(),
            next_id: 0,
            seqs: BTreeMap::new(),
            online: false,
            memory_bytes: 0,
            total_bytes: 0,
            forget: Vec::new(),
            dirty: false,
            stats: Stats::default(),
            problem: None,
        };
        let mut opened = Opened::default();
        match lock(dir) {
            Ok(file) => outbox._lock = Some(file),
            Err(why) => {
                opened.unavailable = Some(why);
                return (outbox, opened);
            }
        }
        match Spool::open(dir) {
            Ok((spool, recovered)) => {
                opened.damage = damage_words(&recovered, spool.path());
                outbox.next_id = recovered.next_id;
                outbox.seqs = recovered.seqs;
                opened.unclean = recovered.unclean;
                let kept = fitting_max_bytes(&recovered.records, &outbox.limits);
                for (record, keep) in recovered.records.into_iter().zip(kept) {
                    let size = size_of(&record.topic, &record.payload);
                    if !keep {
                        // Removed from the spool at the next sync.
                        outbox.forget.push(record.id);
                        outbox.stats.dropped += 1;
                        opened.dropped += 1;
                        opened.dropped_bytes += size;
                        continue;
                    }
                    opened.replayed += 1;
                    opened.replayed_bytes += size;
                    outbox.total_bytes += size;
                    let stream = outbox.stream_id(&record.topic);
                    outbox.index(record.id, stream);
                    outbox.waiting.insert(
                        record.id,
                        Waiting::Disk {
                            size: size as u32,
                            stream,
                        },
                    );
                }
                outbox.spool = Some(spool);
            }
            Err(e) => opened.unavailable = Some(e.to_string()),
        }
        (outbox, opened)
    }

    /// The next sequence number of `stream`, continuing from earlier runs.
    pub fn next_seq(&mut self, stream: &str) -> u64 {
        let seq = self.seqs.entry(stream.to_string()).or_insert(0);
        *seq += 1;
        *seq
    }

    /// Makes sure the spool has reserved `seq` of `stream` before a message
    /// carrying it is taken: while connected nothing else reaches the disk,
    /// and a kill -9 must not let the next run hand out the same seq for
    /// another reading. One durable write per [`SEQ_RESERVE`] seqs.
    fn reserve(&mut self, stream: &str, seq: u64) {
        // Offline, the record itself goes to disk with its seq.
        if !self.online {
            return;
        }
        if let Some(Err(e)) = self
            .spool
            .as_mut()
            .map(|spool| spool.reserve(stream, seq, SEQ_RESERVE))
        {
            self.problem = Some(e.to_string());
        }
    }

    /// The last sequence number handed out for `stream`, in any run.
    pub fn last_seq(&self, stream: &str) -> Option<u64> {
        self.seqs.get(stream).copied()
    }

    /// Takes a message. `seq` is the stream's sequence number in the
    /// payload, if it has one (from [`Outbox::next_seq`]).
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
            self.reserve(topic, seq);
        }
        let mut evicted = 0;
        while self.total_bytes + size > self.limits.max_bytes {
            let victim = match self.limits.policy {
                DropPolicy::DropNewest => None,
                DropPolicy::DropOldest => self.oldest_waiting(topic),
            };
            match victim {
                Some(id) => {
                    self.drop_waiting(id);
                    self.stats.dropped += 1;
                    evicted += 1;
                }
                None => {
                    self.stats.dropped += 1;
                    return Pushed::Dropped;
                }
            }
        }
        let record = Record {
            id: self.next_id,
            created_ms: now_ms,
            topic: topic.to_string(),
            payload,
            retain,
            stream: seq.map(|s| (topic.to_string(), s)),
        };
        self.next_id += 1;
        self.total_bytes += size;
        let stream = self.stream_id(topic);
        self.index(record.id, stream);
        let to_memory = self.spool.is_none()
            || (self.online && self.memory_bytes + size <= self.limits.memory_limit);
        if to_memory || !self.write_to_spool(std::slice::from_ref(&record)) {
            self.memory_bytes += size;
            self.waiting
                .insert(record.id, Waiting::Memory(Box::new(record)));
        } else {
            self.waiting.insert(
                record.id,
                Waiting::Disk {
                    size: size as u32,
                    stream,
                },
            );
        }
        if evicted > 0 {
            Pushed::QueuedDropping(evicted)
        } else {
            Pushed::Queued
        }
    }

    /// The oldest waiting message of `stream`, or, if it has none waiting,
    /// of the stream holding the most messages.
    fn oldest_waiting(&self, stream: &str) -> Option<u64> {
        let own = self
            .stream_ids
            .get(stream)
            .and_then(|s| self.streams.get(s))
            .and_then(|ids| ids.front());
        if let Some(id) = own {
            return Some(*id);
        }
        self.streams
            .values()
            .max_by_key(|ids| ids.len())
            .and_then(|ids| ids.front().copied())
    }

    fn stream_id(&mut self, name: &str) -> StreamId {
        if let Some(id) = self.stream_ids.get(name) {
            return *id;
        }
        // Ids are reused after a wrap; skip any still naming a stream.
        let mut id = self.next_stream;
        while self.stream_names.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_stream = id.wrapping_add(1);
        self.stream_ids.insert(name.to_string(), id);
        self.stream_names.insert(id, name.to_string());
        id
    }

    fn index(&mut self, id: u64, stream: StreamId) {
        self.streams.entry(stream).or_default().push_back(id);
    }

    fn unindex(&mut self, id: u64, stream: StreamId) {
        if let Some(ids) = self.streams.get_mut(&stream) {
            if ids.front() == Some(&id) {
                ids.pop_front();
            } else {
                ids.retain(|i| *i != id);
            }
            if ids.is_empty() {
                self.streams.remove(&stream);
                if let Some(name) = self.stream_names.remove(&stream) {
                    self.stream_ids.remove(&name);
                }
            }
        }
    }

    fn drop_waiting(&mut self, id: u64) {
        match self.waiting.remove(&id) {
            Some(Waiting::Memory(record)) => {
                let size = size_of(&record.topic, &record.payload);
                self.memory_bytes -= size;
                self.total_bytes -= size;
                let stream = self.stream_id(&record.topic);
                self.unindex(id, stream);
            }
            Some(Waiting::Disk { size, stream }) => {
                self.total_bytes -= u64::from(size);
                self.unindex(id, stream);
                self.forget.push(id);
            }
            None => {}
        }
    }

    /// The next message to hand to the link, if the window has room; it
    /// stays here, in flight, until [`Outbox::acked`]. Messages past
    /// `max_age` are dropped on the way.
    pub fn next_to_send(&mut self, now_ms: u64) -> Option<Record> {
        if !self.online || self.in_flight.len() >= self.limits.window {
            return None;
        }
        let max_age = self.limits.max_age.as_millis() as u64;
        while let Some((&id, _)) = self.waiting.first_key_value() {
            let (record, on_disk) = match self.waiting.remove(&id) {
                Some(Waiting::Memory(record)) => (*record, false),
                Some(Waiting::Disk { size, stream }) => match self.read_back(id) {
                    Some(record) => (record, true),
                    None => {
                        // Unreadable (the spool failed or was damaged):
                        // counted as dropped rather than retried forever.
                        self.total_bytes -= u64::from(size);
                        self.unindex(id, stream);
                        self.stats.dropped += 1;
                        continue;
                    }
                },
                None => continue,
            };
            let stream = self.stream_id(&record.topic);
            self.unindex(id, stream);
            let size = size_of(&record.topic, &record.payload);
            if now_ms.saturating_sub(record.created_ms) > max_age {
                if !on_disk {
                    self.memory_bytes -= size;
                } else {
                    self.forget.push(id);
                }
                self.total_bytes -= size;
                self.stats.expired += 1;
                continue;
            }
            if on_disk {
                // In memory again while it flies.
                self.memory_bytes += size;
            }
            self.in_flight.insert(
                id,
                Flying {
                    record: record.clone(),
                    on_disk,
                },
            );
            return Some(record);
        }
        None
    }

    fn read_back(&mut self, id: u64) -> Option<Record> {
        let spool = self.spool.as_mut()?;
        match spool.read(id) {
            Ok(record) => record,
            Err(e) => {
                self.problem = Some(e.to_string());
                None
            }
        }
    }

    /// The broker acknowledged message `id`.
    pub fn acked(&mut self, id: u64) {
        if let Some(flying) = self.in_flight.remove(&id) {
            let size = size_of(&flying.record.topic, &flying.record.payload);
            self.memory_bytes -= size;
            self.total_bytes -= size;
            self.stats.acked += 1;
            if flying.on_disk {
                self.forget.push(id);
            }
        }
    }

    /// A message from [`Outbox::next_to_send`] the link could not take
    /// (its queue was full): it goes back to the front.
    pub fn requeue(&mut self, id: u64) {
        let Some(flying) = self.in_flight.remove(&id) else {
            return;
        };
        let record = flying.record;
        let size = size_of(&record.topic, &record.payload);
        // Oldest of its stream again.
        let stream = self.stream_id(&record.topic);
        self.streams.entry(stream).or_default().push_front(id);
        if flying.on_disk {
            self.memory_bytes -= size;
            self.waiting.insert(
                id,
                Waiting::Disk {
                    size: size as u32,
                    stream,
                },
            );
        } else {
            self.waiting.insert(id, Waiting::Memory(Box::new(record)));
        }
    }

    /// A message from [`Outbox::next_to_send`] that can never be sent (the
    /// link refused it as too large); counted as dropped.
    pub fn discard(&mut self, id: u64) {
        if let Some(flying) = self.in_flight.remove(&id) {
            let size = size_of(&flying.record.topic, &flying.record.payload);
            self.memory_bytes -= size;
            self.total_bytes -= size;
            self.stats.dropped += 1;
            if flying.on_disk {
                self.forget.push(id);
            }
        }
    }

    /// The link is up: messages may be handed to it again. Those in flight
    /// when it went down are the link's to resend (it keeps them).
    pub fn online(&mut self) {
        self.online = true;
    }

    /// The link is down: everything in memory goes to disk, so a crash or
    /// power cut while offline loses nothing, and new messages follow it.
    pub fn offline(&mut self) {
        self.online = false;
        self.spill();
        // From here on every seq handed out is in a record on disk, so the
        // reservations can go: a kill -9 while offline then continues the
        // seqs exactly, without a gap.
        self.release_reservations();
    }

    /// Writes every message that is only in memory to the spool (in flight
    /// ones stay in memory too: the link still holds them).
    fn spill(&mut self) {
        if self.spool.is_none() {
            return;
        }
        let mut records: Vec<Record> = self
            .in_flight
            .values()
            .filter(|f| !f.on_disk)
            .map(|f| f.record.clone())
            .collect();
        let memory_ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| matches!(w, Waiting::Memory(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in &memory_ids {
            if let Some(Waiting::Memory(record)) = self.waiting.get(id) {
                records.push(Record::clone(record));
            }
        }
        if records.is_empty() {
            return;
        }
        records.sort_by_key(|r| r.id);
        let written: BTreeSet<u64> = if self.write_to_spool(&records) {
            records.iter().map(|r| r.id).collect()
        } else {
            // A full disk may still take some of them: as many as fit,
            // oldest first, rather than none.
            records
                .iter()
                .take_while(|r| self.write_to_spool(std::slice::from_ref(*r)))
                .map(|r| r.id)
                .collect()
        };
        for (id, flying) in self.in_flight.iter_mut() {
            if written.contains(id) {
                flying.on_disk = true;
            }
        }
        for id in memory_ids.into_iter().filter(|id| written.contains(id)) {
            if let Some(Waiting::Memory(record)) = self.waiting.remove(&id) {
                let size = size_of(&record.topic, &record.payload);
                self.memory_bytes -= size;
                let stream = self.stream_id(&record.topic);
                self.waiting.insert(
                    id,
                    Waiting::Disk {
                        size: size as u32,
                        stream,
                    },
                );
            }
        }
    }

    /// Appends to the spool (durable at the next [`Outbox::sync`]); false,
    /// with the problem recorded, when the disk refuses.
    fn write_to_spool(&mut self, records: &[Record]) -> bool {
        let Some(spool) = self.spool.as_mut() else {
            return false;
        };
        match spool.write(records) {
            Ok(()) => {
                self.dirty = true;
                true
            }
            Err(e) => {
                self.problem = Some(e.to_string());
                false
            }
        }
    }

    /// Makes what was written durable and removes acknowledged messages
    /// from the spool. Called on a short timer, so disk writes are grouped
    /// rather than one per message.
    pub fn sync(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let mut result = Ok(());
        if !self.forget.is_empty() {
            result = spool.forget(&self.forget);
            if result.is_ok() {
                self.forget.clear();
            }
        }
        // Even when the forget failed (a full disk): what was written must
        // still be made durable.
        if self.dirty {
            match spool.sync() {
                Ok(()) => self.dirty = false,
                Err(e) => result = result.and(Err(e)),
            }
        }
        if let Err(e) = result {
            self.problem = Some(e.to_string());
        }
    }

    /// Whether [`Outbox::sync`] has anything to do.
    pub fn needs_sync(&self) -> bool {
        self.dirty || !self.forget.is_empty()
    }

    /// At shutdown: every unacknowledged message and the sequence counters
    /// to disk, durably, as far as the disk takes them. Says how many
    /// messages are kept and how many are lost (only in memory, so gone
    /// when the process ends).
    pub fn persist(&mut self) -> Persisted {
        self.spill();
        self.release_reservations();
        self.sync();
        let durable = !self.dirty;
        let on_disk = self
            .waiting
            .values()
            .filter(|w| matches!(w, Waiting::Disk { .. }))
            .count()
            + self.in_flight.values().filter(|f| f.on_disk).count();
        let queued = self.waiting.len() + self.in_flight.len();
        // Written but not synced: the kernel may still write them out, but
        // nothing promises it, so they are not counted as kept.
        let kept = if durable { on_disk } else { 0 };
        Persisted {
            kept,
            lost: queued - kept,
            // Left for take_problem too: the agent logs spool problems.
            problem: self.problem.clone(),
        }
    }

    /// Writes the exact seqs, then voids the reservations (only once the
    /// exact seqs are on disk, or a crash could reuse seqs).
    fn release_reservations(&mut self) {
        // The spool may hold an earlier, killed run's reservations too.
        if !self.checkpoint() {
            return;
        }
        if let Some(Err(e)) = self.spool.as_mut().map(Spool::close) {
            self.problem = Some(e.to_string());
        }
    }

    /// Records the sequence counters on disk (so a restart continues them
    /// even when every message was acknowledged). False if the disk refused.
    fn checkpoint(&mut self) -> bool {
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.checkpoint(&self.seqs) {
                self.problem = Some(e.to_string());
                return false;
            }
        }
        true
    }

    /// Whether a spool failure is waiting for [`Outbox::take_problem`].
    pub fn has_problem(&self) -> bool {
        self.problem.is_some()
    }

    /// The last spool failure since this was last called, in words.
    pub fn take_problem(&mut self) -> Option<String> {
        self.problem.take()
    }

    pub fn stats(&self) -> Stats {
        let spooled = self
            .waiting
            .values()
            .filter(|w| matches!(w, Waiting::Disk { .. }))
            .count();
        Stats {
            queued: self.waiting.len() + self.in_flight.len(),
            queued_bytes: self.total_bytes,
            in_flight: self.in_flight.len(),
            spooled,
            spool_file_bytes: self.spool.as_ref().map_or(0, Spool::file_bytes),
            ..self.stats.clone()
        }
    }

    /// Bytes of messages held in memory (waiting or in flight).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `outbox.max_bytes`, for the words that report a drop.
    pub fn max_bytes(&self) -> u64 {
        self.limits.max_bytes
    }
}

/// The damage a spool's recovery skipped, in one sentence: the first
/// region in full, the rest counted.
fn damage_words(recovered: &spool::Recovered, path: &Path) -> Option<String> {
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

/// Takes `dir/outbox.lock` (an advisory lock the kernel drops when the
/// process dies, so a `kill -9` leaves nothing stale).
fn lock(dir: &Path) -> Result<std::fs::File, String> {
    use rustix::fs::{FlockOperation, flock};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let cannot_create = |e: std::io::Error| {
        format!(
            "cannot create the outbox spool directory {}: {}",
            dir.display(),
            crate::config::io_words(&e)
        )
    };
    let existed = dir.is_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(cannot_create)?;
    if !existed {
        // The mode given at creation is cut by the umask; this is not. A
        // directory that was there already is the operator's to set.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(cannot_create)?;
    }
    let path = dir.join("outbox.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot open {}: {}",
                path.display(),
                crate::config::io_words(&e)
            )
        })?;
    spool::make_private(&file, &path).map_err(|e| e.to_string())?;
    flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        format!(
            "another pinpost is using the outbox spool {}; give each agent its own \
             outbox.path",
            dir.display()
        )
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, policy: DropPolicy) -> Limits {
        Limits {
            memory_limit: max_bytes / 2,
            max_bytes,
            max_age: Duration::from_secs(3600),
            policy,
            window: 4,
        }
    }

    fn open(dir: &Path, l: Limits) -> Outbox {
        let (outbox, opened) = Outbox::open(dir, l);
        assert!(opened.unavailable.is_none(), "{opened:?}");
        outbox
    }

    fn push(o: &mut Outbox, topic: &str, n: u64) {
        let seq = o.next_seq(topic);
        o.push(topic, format!("{n}").into_bytes(), false, Some(seq), 1_000);
    }

    /// Sends everything it can, acknowledging as the broker would.
    fn deliver_all(o: &mut Outbox) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut batch = Vec::new();
            while let Some(r) = o.next_to_send(2_000) {
                batch.push(r);
            }
            if batch.is_empty() {
                return out;
            }
            for r in batch {
                out.push(format!(
                    "{}={}",
                    r.topic,
                    String::from_utf8_lossy(&r.payload)
                ));
                o.acked(r.id);
            }
        }
    }

    #[test]
    fn a_stream_is_forgotten_once_its_last_message_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.online();
        // Results for 10,000 made-up command names: one stream each.
        for n in 0..10_000 {
            let topic = format!("p/d/cmd/x{n}/result");
            o.push(&topic, b"{}".to_vec(), false, None, 1_000);
            deliver_all(&mut o);
        }
        assert_eq!(
            (o.streams.len(), o.stream_ids.len(), o.stream_names.len()),
            (0, 0, 0),
            "no bookkeeping left for delivered streams"
        );
        // A stream with messages waiting keeps its place and its order.
        o.offline();
        push(&mut o, "s/a", 1);
        push(&mut o, "s/b", 2);
        push(&mut o, "s/a", 3);
        assert_eq!(o.stream_ids.len(), 2);
        o.online();
        assert_eq!(deliver_all(&mut o), ["s/a=1", "s/b=2", "s/a=3"]);
        assert!(o.stream_ids.is_empty() && o.stream_names.is_empty());
    }

    #[test]
    fn while_connected_only_seq_reservations_touch_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.online();
        let empty = o.stats().spool_file_bytes;
        push(&mut o, "s/a", 0);
        let reservation = o.stats().spool_file_bytes - empty;
        assert!(reservation > 0 && reservation < 64, "{reservation} bytes");
        for n in 1..SEQ_RESERVE + 10 {
            push(&mut o, "s/a", n);
            let _ = deliver_all(&mut o);
        }
        o.sync();
        assert_eq!(
            o.stats().spool_file_bytes,
            empty + 2 * reservation,
            "no message, one reservation per {SEQ_RESERVE} seqs"
        );
        assert_eq!(o.stats().acked, SEQ_RESERVE + 10);
        assert!(o.is_empty());
    }

    #[test]
    fn after_a_kill_seqs_continue_past_any_used_and_after_a_clean_stop_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.online();
        for n in 0..5 {
            push(&mut o, "s/a", n);
            let _ = deliver_all(&mut o);
        }
        // kill -9 while connected: seqs 1..=5 were published from memory.
        drop(o);
        let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        assert!(opened.unclean);
        let seq = o.next_seq("s/a");
        assert!(seq > 5, "seq {seq} would reuse one already published");
        o.push("s/a", b"x".to_vec(), false, Some(seq), 1_000);
        o.online();
        let _ = deliver_all(&mut o);
        o.persist();
        drop(o);
        let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        assert!(!opened.unclean);
        assert_eq!(o.next_seq("s/a"), seq + 1, "no gap after a clean stop");
    }

    #[test]
    fn at_most_a_window_is_in_flight_and_order_is_creation_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.online();
        for n in 0..6 {
            push(&mut o, if n % 2 == 0 { "s/a" } else { "s/b" }, n);
        }
        let first: Vec<Record> = std::iter::from_fn(|| o.next_to_send(1_000)).collect();
        assert_eq!(first.len(), 4, "window of 4");
        assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
        o.acked(0);
        assert_eq!(o.next_to_send(1_000).map(|r| r.id), Some(4));
        assert_eq!(o.next_to_send(1_000), None);
    }

    #[test]
    fn an_outage_goes_to_disk_and_a_restart_sends_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.online();
        push(&mut o, "s/a", 1);
        let flying = o.next_to_send(1_000).unwrap();
        push(&mut o, "s/a", 2);
        o.offline();
        push(&mut o, "s/a", 3);
        push(&mut o, "s/b", 4);
        o.sync();
        assert_eq!(o.memory_bytes(), size_of(&flying.topic, &flying.payload));
        // kill -9 here: nothing more is done with `o`.
        drop(o);
        let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        assert_eq!(opened.replayed, 4);
        // Killed while offline: every seq is in a record, so no gap.
        assert!(!opened.unclean);
        assert_eq!(o.last_seq("s/a"), Some(3));
        assert_eq!(o.next_seq("s/b"), 2, "sequences continue");
        o.online();
        assert_eq!(deliver_all(&mut o), ["s/a=1", "s/a=2", "s/a=3", "s/b=4"]);
    }

    #[test]
    fn a_spool_over_max_bytes_is_cut_to_it_at_open_by_policy() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.offline();
        for n in 100..200 {
            push(&mut o, "s/a", n);
        }
        o.sync();
        drop(o);
        let each = size_of("s/a", b"100");
        // Restarted with a tenth of the room (outbox.max_bytes lowered).
        let (mut o, opened) = Outbox::open(dir.path(), limits(each * 10, DropPolicy::DropOldest));
        assert_eq!((opened.replayed, opened.dropped), (10, 90));
        assert_eq!(opened.dropped_bytes, each * 90);
        assert_eq!(o.stats().dropped, 90, "counted as dropped");
        assert!(o.stats().queued_bytes <= each * 10, "{:?}", o.stats());
        o.sync();
        drop(o);
        // The drop reached the disk: a roomy restart finds only the ten.
        let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        assert_eq!((opened.replayed, opened.dropped), (10, 0));
        o.online();
        let sent = deliver_all(&mut o);
        assert_eq!(
            sent.first().map(String::as_str),
            Some("s/a=190"),
            "the newest kept"
        );
        assert_eq!(sent.len(), 10);

        // Keeping the history instead: the oldest stay.
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropNewest));
        o.offline();
        for n in 100..200 {
            push(&mut o, "s/a", n);
        }
        o.sync();
        drop(o);
        let (mut o, opened) = Outbox::open(dir.path(), limits(each * 10, DropPolicy::DropNewest));
        assert_eq!((opened.replayed, opened.dropped), (10, 90));
        o.online();
        let sent = deliver_all(&mut o);
        assert_eq!(sent.last().map(String::as_str), Some("s/a=109"));
        assert_eq!(
            o.next_seq("s/a"),
            101,
            "seqs continue after the dropped ones"
        );
    }

    #[test]
    fn acknowledged_messages_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.offline();
        for n in 0..10 {
            push(&mut o, "s/a", n);
        }
        o.online();
        for _ in 0..4 {
            let r = o.next_to_send(1_000).unwrap();
            o.acked(r.id);
        }
        o.sync();
        drop(o);
        let (_, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        assert_eq!(opened.replayed, 6);
    }

    #[test]
    fn when_full_the_chatty_stream_loses_its_oldest_not_the_quiet_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(4096, DropPolicy::DropOldest));
        push(&mut o, "s/quiet", 0);
        for n in 0..200 {
            push(&mut o, "s/chatty", n);
        }
        let s = o.stats();
        assert!(s.queued_bytes <= 4096, "{s:?}");
        assert!(s.dropped > 100, "{s:?}");
        o.online();
        let sent = deliver_all(&mut o);
        assert_eq!(sent[0], "s/quiet=0");
        assert_eq!(sent.last().map(String::as_str), Some("s/chatty=199"));
        let chatty: Vec<u64> = sent[1..]
            .iter()
            .map(|m| m["s/chatty=".len()..].parse().unwrap())
            .collect();
        assert!(
            chatty.windows(2).all(|w| w[1] == w[0] + 1),
            "a contiguous tail"
        );
    }

    #[test]
    fn drop_newest_keeps_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(4096, DropPolicy::DropNewest));
        for n in 0..200 {
            push(&mut o, "s/a", n);
        }
        o.online();
        let sent = deliver_all(&mut o);
        assert_eq!(sent[0], "s/a=0");
        assert!(sent.len() < 200 && o.stats().dropped == 200 - sent.len() as u64);
    }

    #[test]
    fn messages_past_max_age_expire_instead_of_leaving() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = limits(1 << 20, DropPolicy::DropOldest);
        l.max_age = Duration::from_secs(1);
        let mut o = open(dir.path(), l);
        o.push("s/a", b"old".to_vec(), false, None, 1_000);
        o.push("s/a", b"new".to_vec(), false, None, 5_000);
        o.online();
        let r = o.next_to_send(5_500).unwrap();
        assert_eq!(r.payload, b"new");
        assert_eq!(o.stats().expired, 1);
    }

    #[test]
    fn a_backlog_over_the_memory_limit_spills_but_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = limits(1 << 20, DropPolicy::DropOldest);
        l.memory_limit = 1024;
        let mut o = open(dir.path(), l);
        o.online();
        for n in 0..100 {
            push(&mut o, "s/a", n);
        }
        assert!(o.memory_bytes() <= 1024 + 4 * 64);
        assert!(o.stats().spooled > 50);
        let sent = deliver_all(&mut o);
        let expected: Vec<String> = (0..100).map(|n| format!("s/a={n}")).collect();
        assert_eq!(sent, expected);
    }

    #[test]
    fn a_requeued_message_goes_out_first_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.online();
        push(&mut o, "s/a", 1);
        push(&mut o, "s/a", 2);
        let r = o.next_to_send(1_000).unwrap();
        o.requeue(r.id);
        assert_eq!(deliver_all(&mut o), ["s/a=1", "s/a=2"]);
    }

    #[test]
    fn a_second_outbox_on_the_same_spool_is_refused_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        let (_, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        let why = opened.unavailable.unwrap();
        assert!(why.contains("another pinpost is using"), "{why}");
    }

    #[test]
    fn a_torn_spool_is_reported_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.offline();
        for n in 0..3 {
            push(&mut o, "s/a", n);
        }
        o.sync();
        drop(o);
        // Power lost in the middle of the next write.
        let wal = dir.path().join("outbox.wal");
        let mut bytes = std::fs::read(&wal).unwrap();
        bytes.extend_from_slice(&[0x50, 0x50, 1, 200, 0, 0]);
        std::fs::write(&wal, bytes).unwrap();
        let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        let damage = opened.damage.unwrap();
        assert!(damage.starts_with("6 damaged bytes at offset "), "{damage}");
        assert!(!damage.contains("more damaged regions"), "{damage}");
        o.online();
        assert_eq!(deliver_all(&mut o), ["s/a=0", "s/a=1", "s/a=2"]);
    }

    #[test]
    fn a_spool_damaged_in_many_places_is_reported_in_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        o.offline();
        for n in 0..400 {
            push(&mut o, "s/a", n);
        }
        o.sync();
        drop(o);
        // A byte of garbage before every frame after the first.
        let wal = dir.path().join("outbox.wal");
        let bytes = std::fs::read(&wal).unwrap();
        let mut damaged = bytes[..8].to_vec();
        let mut at = 8;
        let mut first = true;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 3..at + 7].try_into().unwrap()) as usize;
            if !first {
                damaged.push(0xee);
            }
            first = false;
            damaged.extend_from_slice(&bytes[at..at + 11 + len]);
            at += 11 + len;
        }
        std::fs::write(&wal, damaged).unwrap();
        let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
        let damage = opened.damage.unwrap();
        assert!(damage.starts_with("1 damaged bytes at offset "), "{damage}");
        assert!(damage.contains("(no frame starts here)"), "{damage}");
        let more = damage
            .split(", and ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{damage}"));
        assert!(
            more >= 398,
            "one region before each of 400 frames: {damage}"
        );
        assert!(
            damage.ends_with(&format!("more damaged regions, {} bytes in all", more + 1)),
            "{damage}"
        );
        assert_eq!(opened.replayed, 400);
        o.online();
        assert_eq!(deliver_all(&mut o).len(), 400);
    }

    #[test]
    fn an_unusable_spool_dir_leaves_a_working_memory_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let (mut o, opened) = Outbox::open(&file, limits(1 << 20, DropPolicy::DropOldest));
        assert!(opened.unavailable.is_some());
        o.offline();
        push(&mut o, "s/a", 1);
        o.online();
        assert_eq!(deliver_all(&mut o), ["s/a=1"]);
    }

    /// A tmpfs of `bytes` bytes: a disk that really fills up. Unmounted when
    /// dropped. Needs root (as the tests run here and in CI).
    pub(crate) struct TinyDisk {
        dir: tempfile::TempDir,
    }

    impl TinyDisk {
        pub(crate) fn mount(bytes: u64) -> TinyDisk {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={bytes},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path())
                .status()
                .expect("run mount");
            assert!(status.success(), "mount a tmpfs (this test needs root)");
            TinyDisk { dir }
        }

        pub(crate) fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Takes every free byte left with a file of its own.
        pub(crate) fn fill(&self) {
            use std::io::Write;
            let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
            let block = [0xa5u8; 512];
            while f.write_all(&block).is_ok() {}
            while f.write_all(&block[..1]).is_ok() {}
        }
    }

    impl Drop for TinyDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    #[test]
    fn on_a_full_disk_shutdown_says_exactly_how_many_messages_are_kept_and_lost() {
        let disk = TinyDisk::mount(128 << 10);
        let dir = disk.path().join("outbox");
        let mut o = open(&dir, limits(16 << 20, DropPolicy::DropOldest));
        o.offline();
        let payload = |n: u64| format!("{n:0>1000}").into_bytes();
        for n in 0..300 {
            let seq = o.next_seq("s/a");
            let pushed = o.push("s/a", payload(n), false, Some(seq), 1_000);
            assert_eq!(
                pushed,
                Pushed::Queued,
                "nothing is dropped: max_bytes is 16 MiB"
            );
        }
        o.sync();
        let persisted = o.persist();
        let Persisted { kept, lost, .. } = persisted;
        assert_eq!(kept + lost, 300, "{persisted:?}");
        assert!(
            kept > 50 && lost > 50,
            "128 KiB holds about 120: {persisted:?}"
        );
        let words = persisted.words(&dir).unwrap();
        assert!(
            words.starts_with(&format!(
                "{kept} messages the broker has not acknowledged are kept in "
            )),
            "{words}"
        );
        assert!(
            words.contains(&format!(
                "; {lost} could not be written there and are lost ("
            )),
            "{words}"
        );
        assert!(words.contains("No space left on device"), "{words}");
        drop(o);

        // Exactly those kept come back, oldest first.
        let (mut o, opened) = Outbox::open(&dir, limits(16 << 20, DropPolicy::DropOldest));
        assert_eq!(opened.replayed, kept);
        assert!(opened.damage.is_none(), "{opened:?}");
        o.online();
        let sent = deliver_all(&mut o);
        let want: Vec<String> = (0..kept as u64)
            .map(|n| format!("s/a={}", String::from_utf8(payload(n)).unwrap()))
            .collect();
        assert_eq!(sent, want);
    }

    #[test]
    fn what_is_left_at_shutdown_is_said_in_numbers() {
        let dir = Path::new("/var/lib/pinpost");
        let said = |kept, lost, problem: Option<&str>| {
            Persisted {
                kept,
                lost,
                problem: problem.map(str::to_owned),
            }
            .words(dir)
        };
        assert_eq!(said(0, 0, None), None);
        assert_eq!(
            said(7, 0, None).unwrap(),
            "7 messages the broker has not acknowledged are kept in /var/lib/pinpost and will \
             be sent first at the next start"
        );
        assert_eq!(
            said(0, 3, Some("disk full")).unwrap(),
            "0 messages the broker has not acknowledged are kept in /var/lib/pinpost and will \
             be sent first at the next start; 3 could not be written there and are lost (disk \
             full)"
        );
    }
}
