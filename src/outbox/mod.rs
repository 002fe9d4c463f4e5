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
//! Ages are counted on the outbox's own clock ([`age`]), never the wall
//! clock: a Pi without a real-time clock starts at 1970 or weeks behind and
//! jumps when network time arrives, and a reading made seconds before such
//! a jump must not look years old (or years young).
//!
//! It is split the way rumqttc splits `state.rs` from its event loop: the
//! `queue` is the state (what waits where, seqs, byte counts) and says
//! what the disk must do; `disk` does it on a thread of its own, so the
//! agent's loop never waits on an SD card; the [`spool`] is the file.
//!
//! It knows topics as strings and nothing of MQTT packets or rumqttc: the
//! agent moves messages from here to the link and acknowledgements back.

pub mod age;
mod boot_mark;
mod crc;
mod disk;
mod opened;
mod queue;
pub mod spool;

use opened::damage_words;
pub use opened::{Opened, Unavailable};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::DropPolicy;

pub use disk::Answer;
use disk::SpoolThread;
use queue::Queue;
pub use queue::{SEQ_RESERVE, SpoolDone};
use spool::Spool;
pub use spool::{Record, SpoolError};

/// The bounds an outbox keeps (the config's `outbox` table).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of messages kept in memory while the link is up; past this
    /// the backlog goes to the spool (an SD card wears with every write).
    pub memory_limit: u64,
    /// Bytes of messages held in all, memory and spool together.
    pub max_bytes: u64,
    /// Older messages expire instead of leaving.
    pub max_age: Duration,
    /// Which message pays when the outbox is full.
    pub policy: DropPolicy,
    /// Unacknowledged messages handed to the link at once.
    pub window: usize,
}

/// Counters for the stats message and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Messages not yet acknowledged (waiting and in flight).
    pub queued: usize,
    /// Bytes of the queued messages.
    pub queued_bytes: u64,
    /// Handed to the link and not yet acknowledged.
    pub in_flight: usize,
    /// Messages whose only copy is on disk.
    pub spooled: usize,
    /// Size of the spool file.
    pub spool_file_bytes: u64,
    /// Dropped because the outbox was full.
    pub dropped: u64,
    /// Dropped because they were older than `max_age`.
    pub expired: u64,
    /// Acknowledged by the broker.
    pub acked: u64,
}

/// What happened to a message given to [`Outbox::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, nothing dropped.
    Queued,
    /// Queued, after dropping this many older messages of the same stream.
    QueuedDropping(usize),
    /// Not queued: the outbox is full and the policy keeps what it has.
    Dropped,
    /// Not queued: the disk is too far behind (a card that stopped
    /// answering), so the message could only pile up in memory.
    DiskBehind,
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
    pub(crate) fn words(&self, dir: &Path) -> Option<String> {
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

/// The outbox: the `Queue`'s state, and the spool thread that carries
/// out its disk work. Everything here is called from the agent's loop and
/// returns at once; the disk's answers come back through
/// [`Outbox::next_answer`].
pub struct Outbox {
    queue: Queue,
    dir: PathBuf,
    /// The spool, on its own thread; `None` when it could not be opened or
    /// the thread died.
    disk: Option<SpoolThread>,
    /// Held while the spool is ours: two agents writing one log would
    /// corrupt it.
    _lock: Option<std::fs::File>,
    /// This boot's id, for the boot mark written at a clean stop.
    boot: String,
    /// The clock ages are counted on.
    age: age::AgeClock,
}

impl Outbox {
    /// Opens the spool in `dir` (recovery runs here, before the agent's
    /// loop starts) and queues what earlier runs left there. A spool that
    /// cannot be opened is reported in [`Opened::unavailable`] and the
    /// outbox works from memory alone.
    pub fn open(dir: &Path, limits: Limits) -> (Outbox, Opened) {
        Outbox::open_in_boot(dir, limits, &crate::boot::id())
    }

    /// [`Outbox::open`] as if this boot's id were `boot`.
    fn open_in_boot(dir: &Path, limits: Limits, boot: &str) -> (Outbox, Opened) {
        let mut opened = Opened::default();
        let memory_only = |limits: Limits| Queue::new(limits, false, 0, BTreeMap::new());
        let lock = match lock(dir) {
            Ok(file) => file,
            Err(why) => {
                opened.unavailable = Some(why);
                return (Outbox::without_disk(dir, memory_only(limits)), opened);
            }
        };
        let (spool, recovered) = match Spool::open(dir) {
            Ok(opened) => opened,
            Err(e) => {
                opened.unavailable = Some(e.into());
                return (Outbox::without_disk(dir, memory_only(limits)), opened);
            }
        };
        opened.damage = damage_words(&recovered, spool.path());
        opened.unclean = recovered.unclean;
        let mut seqs = recovered.seqs;
        match boot_mark::open(dir, boot) {
            // Reserved seqs already leave a gap; otherwise the newest seqs
            // may have died unsynced with the machine.
            Ok(boot_mark::Before::OtherBoot) if !recovered.unclean => {
                opened.power_cut = true;
                for next in seqs.values_mut() {
                    *next = next.saturating_add(SEQ_RESERVE);
                }
            }
            Ok(_) => {}
            Err(e) => {
                opened.mark_problem = Some(format!(
                    "cannot write {}: {}",
                    dir.join("boot").display(),
                    crate::words::io_words(&e)
                ))
            }
        }
        let age = age::AgeClock::resume(recovered.records.iter().map(|r| r.created_ms));
        let mut queue = Queue::new(limits, true, recovered.next_id, seqs);
        let ((replayed, replayed_bytes), (dropped, dropped_bytes)) =
            queue.recover(&recovered.records);
        opened.replayed = replayed;
        opened.replayed_bytes = replayed_bytes;
        opened.dropped = dropped;
        opened.dropped_bytes = dropped_bytes;
        let disk = match SpoolThread::start(spool) {
            Ok(thread) => thread,
            Err(e) => {
                opened.unavailable = Some(Unavailable::Thread(e));
                queue.spool_lost();
                let mut outbox = Outbox::without_disk(dir, queue);
                outbox.age = age;
                return (outbox, opened);
            }
        };
        let mut outbox = Outbox {
            queue,
            dir: dir.to_path_buf(),
            disk: Some(disk),
            _lock: Some(lock),
            boot: boot.to_string(),
            age,
        };
        outbox.flush();
        (outbox, opened)
    }

    fn without_disk(dir: &Path, queue: Queue) -> Outbox {
        Outbox {
            queue,
            dir: dir.to_path_buf(),
            disk: None,
            _lock: None,
            boot: String::new(),
            age: age::AgeClock::resume(std::iter::empty()),
        }
    }

    /// Hands the queue's ops to the spool thread.
    fn flush(&mut self) {
        let ops = self.queue.take_ops();
        if ops.is_empty() {
            return;
        }
        if let Some(disk) = self.disk.as_mut() {
            if !disk.send(ops) {
                self.lose_disk();
            }
        }
    }

    fn lose_disk(&mut self) {
        self.disk = None;
        let lost = self.queue.spool_lost();
        tracing::error!(
            lost,
            "the outbox spool's thread stopped; {lost} messages that were only on disk are \
             counted as dropped, and messages are kept in memory only from now on"
        );
    }

    /// The next sequence number of `stream`, continuing from earlier runs.
    pub fn next_seq(&mut self, stream: &str) -> u64 {
        self.queue.next_seq(stream)
    }

    /// The last sequence number handed out for `stream`, in any run.
    pub(crate) fn last_seq(&self, stream: &str) -> Option<u64> {
        self.queue.last_seq(stream)
    }

    /// Takes a message, created at `now_ms`. `seq` is the stream's sequence
    /// number in the payload, if it has one (from [`Outbox::next_seq`]).
    /// When the outbox is full the stream that is adding pays, by policy.
    pub fn push(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        seq: Option<u64>,
        now_ms: u64,
    ) -> Pushed {
        let pushed = self.queue.push(topic, payload, retain, seq, now_ms);
        self.flush();
        pushed
    }

    /// Now on the outbox's own clock ([`age`]): what `push` and
    /// `next_to_send` take as `now_ms`.
    pub fn now_ms(&self) -> u64 {
        self.age.now_ms()
    }

    /// The next message to hand to the link, if the window has room; it
    /// stays here, in flight, until [`Outbox::acked`]. Messages past
    /// `max_age` are dropped on the way. `None` also while the next one is
    /// being read back or its seq reserved: call again after
    /// [`Outbox::on_answer`].
    pub fn next_to_send(&mut self, now_ms: u64) -> Option<Record> {
        let record = self.queue.next_to_send(now_ms);
        self.flush();
        record
    }

    /// The broker acknowledged message `id`.
    pub fn acked(&mut self, id: u64) {
        self.queue.acked(id);
        self.flush();
    }

    /// A message from [`Outbox::next_to_send`] the link could not take (its
    /// queue was full): it goes back to the front.
    pub fn requeue(&mut self, id: u64) {
        self.queue.requeue(id);
        self.flush();
    }

    /// A message from [`Outbox::next_to_send`] that can never be sent (the
    /// link refused it as too large); counted as dropped.
    pub(crate) fn discard(&mut self, id: u64) {
        self.queue.discard(id);
        self.flush();
    }

    /// The link is up: messages may be handed to it again, once their
    /// streams' seqs are reserved on disk.
    pub fn online(&mut self) {
        self.queue.online();
        self.flush();
    }

    /// The link is down: everything in memory goes to the spool, so a
    /// crash or power cut while offline loses nothing, and new messages
    /// follow it there.
    pub fn offline(&mut self) {
        self.queue.offline();
        self.flush();
    }

    /// What the spool thread did next: pending forever when there is no
    /// spool. Cancel-safe, for the agent's `select!`.
    pub async fn next_answer(&mut self) -> Answer {
        let answer = match self.disk.as_mut() {
            Some(disk) => disk.next().await,
            None => std::future::pending().await,
        };
        answer.unwrap_or(Answer::Gone)
    }

    /// Applies an answer from [`Outbox::next_answer`]; the error the disk
    /// met, if any, is the caller's to report.
    pub fn on_answer(&mut self, answer: Answer) -> Option<SpoolError> {
        let error = match answer {
            Answer::Done(done) => self.queue.on_done(done),
            Answer::Settled { .. } => None,
            Answer::Gone => {
                if self.disk.is_some() {
                    self.lose_disk();
                }
                None
            }
        };
        self.flush();
        error
    }

    /// At shutdown: every unacknowledged message and the sequence counters
    /// to disk, durably, as far as the disk takes them. Says how many
    /// messages are kept and how many are lost (only in memory, so gone
    /// when the process ends); the errors met on the way go to `report`.
    pub async fn persist(&mut self, mut report: impl FnMut(SpoolError)) -> Persisted {
        self.queue.persist();
        self.flush();
        let mut durable = false;
        let mut problem = None;
        if let Some(disk) = self.disk.as_mut() {
            if disk.finish() {
                while let Some(answer) = disk.next().await {
                    match answer {
                        Answer::Settled { durable: d } => {
                            durable = d;
                            break;
                        }
                        Answer::Done(done) => {
                            if let Some(e) = self.queue.on_done(done) {
                                problem = Some(e.to_string());
                                report(e);
                            }
                        }
                        Answer::Gone => break,
                    }
                }
            }
        }
        let had_disk = self.disk.take().is_some();
        if had_disk && durable && problem.is_none() {
            // Only now is every seq handed out on disk: the next start,
            // in any boot, may continue them exactly.
            if let Err(e) = boot_mark::clean(&self.dir, &self.boot) {
                problem = Some(format!(
                    "cannot mark the spool as closed cleanly ({}); the next start skips seqs ahead",
                    crate::words::io_words(&e)
                ));
            }
        }
        let (on_disk, queued) = self.queue.on_disk_and_queued();
        // Written but not synced: the kernel may still write them out, but
        // nothing promises it, so they are not counted as kept.
        let kept = if durable { on_disk } else { 0 };
        Persisted {
            kept,
            lost: queued - kept,
            problem,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            spool_file_bytes: self.disk.as_ref().map_or(0, SpoolThread::file_bytes),
            ..self.queue.stats()
        }
    }

    /// Bytes of messages held in memory (waiting or in flight).
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.queue.memory_bytes()
    }

    /// Whether every message has left (acknowledged, dropped or expired).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The spool's directory (`outbox.path`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `outbox.max_bytes`, for the words that report a drop.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.queue.max_bytes()
    }

    /// Waits until the spool thread has applied and committed everything
    /// sent so far, applying its answers; returns the errors they carried
    /// (none if the thread is gone). Blocking: for tests, which drive the
    /// outbox without the agent's loop.
    #[cfg(test)]
    pub(crate) fn settle(&mut self) -> Vec<SpoolError> {
        let mut errors = Vec::new();
        let Some(disk) = self.disk.as_mut() else {
            return errors;
        };
        if !disk.settle() {
            return errors;
        }
        while let Some(answer) = disk.wait_next() {
            match answer {
                Answer::Settled { .. } => break,
                Answer::Done(done) => errors.extend(self.queue.on_done(done)),
                Answer::Gone => break,
            }
        }
        self.flush();
        errors
    }
}

/// The damage a spool's recovery skipped, in one sentence: the first
/// region in full, the rest counted.
/// Takes `dir/outbox.lock` (an advisory lock the kernel drops when the
/// process dies, so a `kill -9` leaves nothing stale).
fn lock(dir: &Path) -> Result<std::fs::File, Unavailable> {
    use rustix::fs::{FlockOperation, flock};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let cannot_create = |err| Unavailable::CreateDir {
        dir: dir.to_path_buf(),
        err,
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
        .map_err(|err| Unavailable::OpenLock {
            path: path.clone(),
            err,
        })?;
    spool::make_private(&file, &path)?;
    flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|_| Unavailable::InUse {
        dir: dir.to_path_buf(),
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests;
