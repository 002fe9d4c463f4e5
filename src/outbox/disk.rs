//! The spool's side of the outbox: applies the queue's [`SpoolOp`]s to the
//! [`Spool`] on a thread of its own, so a slow disk (an SD card's fsync can
//! take hundreds of milliseconds) never stalls the agent's loop: commands
//! are applied, edges published and pings sent while the card works.
//!
//! Writes reach the kernel as they arrive (so they survive a `kill -9`) and
//! are made durable by one sync at most [`SYNC_INTERVAL`] after the first
//! unsynced one (a group commit: a power cut loses at most that much);
//! forgets are grouped the same way. The syncs themselves run on a second
//! thread, on a second handle of the file, so that while a card takes its
//! time the spool's thread goes on writing (what arrives still reaches the
//! kernel at once) and reading (messages read back still leave).
//! Reservations are answered once a sync that began after them has ended;
//! releases, and the stop's last commit, sync before they return. Answers
//! go back in the order of the ops, except reservations, which wait for
//! their sync.
//!
//! It must not know what the messages are, when they should be written or
//! read (the queue decides), or anything of the agent, MQTT or the config.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::queue::{SpoolDone, SpoolOp};
use super::spool::{Record, Spool, SpoolError};

/// How long a write may wait for its sync, and forgets for theirs: one
/// disk sync per interval, not one per message.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Syncs run by a thread of their own, and the answers waiting for them.
struct Syncs {
    to: mpsc::Sender<(u64, File)>,
    /// The sync running, by ticket (they are numbered as they start).
    running: Option<u64>,
    /// Another sync is wanted once the running one ends: something was
    /// written after it began.
    again: bool,
    next: u64,
    /// Answers that may go only once a sync numbered at least this ended.
    held: Vec<(u64, SpoolDone)>,
}

/// The spool and what it owes the disk.
pub struct Disk {
    spool: Spool,
    /// `None`: every sync runs here and now (tests, and a failed start of
    /// the sync thread).
    syncs: Option<Syncs>,
    /// Acknowledged or dropped ids not yet forgotten on disk.
    forget: Vec<u64>,
    /// Written but not yet synced.
    dirty: bool,
    /// When the oldest unsynced write or unwritten forget arrived.
    since: Option<Instant>,
}

impl Disk {
    pub fn new(spool: Spool) -> Disk {
        Disk {
            spool,
            syncs: None,
            forget: Vec::new(),
            dirty: false,
            since: None,
        }
    }

    /// Like [`Disk::new`], with syncs on a thread of their own that reports
    /// each one to `back` as [`Message::Synced`].
    fn with_sync_thread(spool: Spool, back: mpsc::Sender<Message>) -> Disk {
        Disk::with_syncing(spool, back, File::sync_data)
    }

    /// [`Disk::with_sync_thread`] with the sync step given (a test holds
    /// it to play a card that takes its time).
    fn with_syncing(
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

    /// Applies one op; what it did, if anything needs saying, goes to `done`.
    pub fn apply(&mut self, op: SpoolOp, done: &mut Vec<SpoolDone>) {
        match op {
            SpoolOp::Write(records) => done.push(self.write(records)),
            SpoolOp::Forget(ids) => {
                self.forget.extend(ids);
                self.since.get_or_insert_with(Instant::now);
            }
            SpoolOp::Read(ids) => done.push(self.read(&ids)),
            SpoolOp::Reserve { seqs, epoch } => {
                // One frame and one sync for every stream a reconnect asks
                // for, not one each.
                let error = self.spool.reserve_upto(&seqs).err();
                let answer = SpoolDone::Reserved { seqs, epoch, error };
                match self.syncs.as_mut() {
                    // Durable once a sync that begins from here has ended.
                    Some(syncs)
                        if !matches!(answer, SpoolDone::Reserved { error: Some(_), .. }) =>
                    {
                        syncs.held.push((syncs.next, answer));
                        self.start_sync(done);
                    }
                    _ => done.push(answer),
                }
            }
            SpoolOp::Release(seqs) => {
                if let Err(e) = self.release(&seqs) {
                    done.push(SpoolDone::Failed(e));
                }
            }
        }
        if let Some(e) = self.spool.take_compaction_error() {
            done.push(SpoolDone::Failed(e));
        }
    }

    /// Writes a batch; on failure (a full disk may still take some) as many
    /// as fit, oldest first, and the rest go back.
    fn write(&mut self, records: Vec<Record>) -> SpoolDone {
        let error = match self.spool.write(&records) {
            Ok(()) => {
                self.wrote();
                return SpoolDone::Written;
            }
            Err(e) => e,
        };
        let mut rest = records.into_iter();
        let mut written_any = false;
        let mut unwritten = Vec::new();
        for record in rest.by_ref() {
            if self.spool.write(std::slice::from_ref(&record)).is_err() {
                unwritten.push(record);
                break;
            }
            written_any = true;
        }
        unwritten.extend(rest);
        if written_any {
            self.wrote();
        }
        SpoolDone::Unwritten {
            records: unwritten,
            error,
        }
    }

    fn wrote(&mut self) {
        self.dirty = true;
        self.since.get_or_insert_with(Instant::now);
    }

    fn read(&mut self, ids: &[u64]) -> SpoolDone {
        let mut records = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut error = None;
        for id in ids {
            match self.spool.read(*id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => missing.push(*id),
                Err(e) => {
                    missing.push(*id);
                    error.get_or_insert(e);
                }
            }
        }
        SpoolDone::Read {
            records,
            missing,
            error,
        }
    }

    /// The exact seqs, then the end of the reservations (only once the
    /// exact seqs are on disk, or a crash could reuse seqs).
    fn release(&mut self, seqs: &BTreeMap<String, u64>) -> Result<(), SpoolError> {
        self.spool.checkpoint(seqs)?;
        if self.syncs.is_some() {
            self.spool.sync()?;
        }
        self.spool.close()?;
        if self.syncs.is_some() {
            self.spool.sync()?;
        }
        Ok(())
    }

    /// Starts a sync on the sync thread, or marks one wanted after the
    /// running one; without a sync thread, syncs here.
    fn start_sync(&mut self, done: &mut Vec<SpoolDone>) {
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
    fn sync_here(&mut self, done: &mut Vec<SpoolDone>) -> bool {
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
    fn synced(&mut self, ticket: u64, error: Option<std::io::Error>, done: &mut Vec<SpoolDone>) {
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

    /// When [`Disk::commit`] is due, if anything waits for it.
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + SYNC_INTERVAL)
    }

    /// The group commit: removes forgotten ids from the spool and starts a
    /// sync of every write (on the sync thread, when there is one). True
    /// when nothing written is left unsynced.
    pub fn commit(&mut self, done: &mut Vec<SpoolDone>) -> bool {
        if self.syncs.is_none() {
            return self.commit_here(done);
        }
        self.since = None;
        let forgot = !self.forget.is_empty();
        self.forget_now(done);
        if self.dirty || forgot {
            self.dirty = false;
            self.start_sync(done);
        }
        if let Some(e) = self.spool.take_compaction_error() {
            done.push(SpoolDone::Failed(e));
        }
        if !self.forget.is_empty() {
            self.since = Some(Instant::now());
        }
        false
    }

    fn forget_now(&mut self, done: &mut Vec<SpoolDone>) {
        if !self.forget.is_empty() {
            match self.spool.forget(&self.forget) {
                Ok(()) => self.forget.clear(),
                // Kept for the next commit; a full disk may have room then.
                Err(e) => done.push(SpoolDone::Failed(e)),
            }
        }
    }

    /// Commits and syncs on this thread before it returns (the stop, and
    /// tests that wait for it): true when everything written is durable.
    pub fn commit_here(&mut self, done: &mut Vec<SpoolDone>) -> bool {
        self.since = None;
        self.forget_now(done);
        // Even when the forget failed: what was written must still be made
        // durable. With syncs deferred, frames written since the last sync
        // (forgets, reservations) are not counted in `dirty`: sync anyway.
        if self.dirty || self.syncs.is_some() {
            self.sync_here(done);
        }
        if let Some(e) = self.spool.take_compaction_error() {
            done.push(SpoolDone::Failed(e));
        }
        if !self.forget.is_empty() || self.dirty {
            // Try again later rather than never.
            self.since = Some(Instant::now());
        }
        !self.dirty
    }

    pub fn file_bytes(&self) -> u64 {
        self.spool.file_bytes()
    }
}

/// What the outbox sends the spool thread.
enum Message {
    Ops(Vec<SpoolOp>),
    /// Commit now and answer [`Answer::Settled`] (tests, and the stop).
    Settle,
    /// Commit, answer [`Answer::Settled`] and end the thread.
    Finish,
    /// The sync thread ended sync `ticket`.
    Synced {
        ticket: u64,
        error: Option<std::io::Error>,
    },
    /// The outbox is going away without a stop (a test, a panic): commit
    /// what is due and end.
    Quit,
}

/// What the spool thread sends back.
#[derive(Debug)]
pub enum Answer {
    Done(SpoolDone),
    /// Everything sent before was applied and committed; `durable` when
    /// nothing written is left unsynced.
    Settled {
        durable: bool,
    },
    /// The thread is gone (it panicked, or was finished).
    Gone,
}

/// The outbox's handle on the spool thread.
pub struct SpoolThread {
    /// `None` once dropped, which ends the thread.
    to: Option<mpsc::Sender<Message>>,
    thread: Option<std::thread::JoinHandle<()>>,
    from: UnboundedReceiver<Answer>,
    file_bytes: Arc<AtomicU64>,
    alive: bool,
}

impl SpoolThread {
    /// Moves `spool` to a thread of its own. Fails only if the system
    /// cannot start a thread.
    pub fn start(spool: Spool) -> std::io::Result<SpoolThread> {
        let (to, inbox) = mpsc::channel();
        let (outbox, from) = unbounded_channel();
        let mut disk = Disk::with_sync_thread(spool, to.clone());
        let file_bytes = Arc::new(AtomicU64::new(disk.file_bytes()));
        let bytes = Arc::clone(&file_bytes);
        let thread = std::thread::Builder::new()
            .name("pinpost-spool".into())
            // Nothing deep happens here: the default 2 MiB would only be
            // address space, but say so.
            .stack_size(256 << 10)
            .spawn(move || serve(&mut disk, &inbox, &outbox, &bytes))?;
        Ok(SpoolThread {
            to: Some(to),
            thread: Some(thread),
            from,
            file_bytes,
            alive: true,
        })
    }

    /// Hands ops over; false if the thread is gone.
    pub fn send(&mut self, ops: Vec<SpoolOp>) -> bool {
        self.alive = self.alive && self.post(Message::Ops(ops));
        self.alive
    }

    /// The next answer; `None` once the thread is gone. Cancel-safe.
    pub async fn next(&mut self) -> Option<Answer> {
        self.from.recv().await
    }

    /// Asks for a commit now, answered by [`Answer::Settled`] after every
    /// answer to the ops sent before.
    pub fn settle(&mut self) -> bool {
        self.alive = self.alive && self.post(Message::Settle);
        self.alive
    }

    /// Like [`SpoolThread::settle`], and the thread ends after answering.
    pub fn finish(&mut self) -> bool {
        let sent = self.alive && self.post(Message::Finish);
        self.alive = false;
        sent
    }

    /// Waits for the next answer without a runtime (tests only): `None`
    /// once the thread is gone.
    #[cfg(test)]
    pub(crate) fn wait_next(&mut self) -> Option<Answer> {
        use tokio::sync::mpsc::error::TryRecvError;
        for tries in 0u32.. {
            match self.from.try_recv() {
                Ok(answer) => return Some(answer),
                Err(TryRecvError::Disconnected) => return None,
                // The thread usually answers within microseconds.
                Err(TryRecvError::Empty) if tries < 10_000 => std::thread::yield_now(),
                Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        None
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.load(Ordering::Relaxed)
    }

    fn post(&self, message: Message) -> bool {
        self.to.as_ref().is_some_and(|to| to.send(message).is_ok())
    }
}

impl Drop for SpoolThread {
    /// Waits for the thread to apply what it was sent and commit: the
    /// spool's lock is released only after, so the next owner of the
    /// directory never meets a file still being written.
    fn drop(&mut self) {
        // The sync thread holds a sender too, so the channel alone would
        // never tell the spool's thread to end.
        self.post(Message::Quit);
        self.to = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    disk: &mut Disk,
    inbox: &mpsc::Receiver<Message>,
    answers: &UnboundedSender<Answer>,
    file_bytes: &AtomicU64,
) {
    let mut done = Vec::new();
    // A message taken while gathering a batch, to handle next.
    let mut taken = None;
    loop {
        let message = match disk.due() {
            // Due already: commit before taking more, or ops (and the sync
            // thread's reports) that keep coming would put the sync and
            // the forgets off for as long as they come.
            Some(due) if due <= Instant::now() => None,
            _ if taken.is_some() => taken.take(),
            Some(due) => {
                match inbox.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        // The outbox is gone (the agent ended without a
                        // clean stop): keep what was written.
                        disk.commit(&mut done);
                        return;
                    }
                }
            }
            None => match inbox.recv() {
                Ok(message) => Some(message),
                Err(_) => return,
            },
        };
        let mut settled = None;
        let mut last = false;
        match message {
            None => {
                disk.commit(&mut done);
            }
            Some(Message::Ops(mut ops)) => {
                // Ops that came while the disk was busy are applied as one
                // batch, so reservations asked one push at a time (the
                // first states of several outputs) cost one sync. Bounded,
                // so a commit that falls due is not put off.
                for _ in 0..BATCH_MESSAGES {
                    match inbox.try_recv() {
                        Ok(Message::Ops(more)) => ops.extend(more),
                        Ok(other) => {
                            taken = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                for op in merge_reservations(ops) {
                    disk.apply(op, &mut done);
                }
            }
            Some(Message::Settle) => settled = Some(disk.commit_here(&mut done)),
            Some(Message::Finish) => {
                settled = Some(disk.commit_here(&mut done));
                last = true;
            }
            Some(Message::Synced { ticket, error }) => disk.synced(ticket, error, &mut done),
            Some(Message::Quit) => {
                disk.commit_here(&mut done);
                last = true;
            }
        }
        file_bytes.store(disk.file_bytes(), Ordering::Relaxed);
        for d in done.drain(..) {
            // Nobody listening means the agent is ending: nothing to tell.
            let _ = answers.send(Answer::Done(d));
        }
        if let Some(durable) = settled {
            let _ = answers.send(Answer::Settled { durable });
        }
        if last {
            return;
        }
    }
}

/// Messages of ops gathered into one batch at most.
const BATCH_MESSAGES: usize = 256;

/// Merges reservations that follow one another (of one epoch) into one:
/// the answer then covers every stream, in the same place among the ops.
fn merge_reservations(ops: Vec<SpoolOp>) -> Vec<SpoolOp> {
    let mut merged: Vec<SpoolOp> = Vec::with_capacity(ops.len());
    for op in ops {
        match (merged.last_mut(), op) {
            (
                Some(SpoolOp::Reserve { seqs, epoch }),
                SpoolOp::Reserve {
                    seqs: more,
                    epoch: same,
                },
            ) if *epoch == same => {
                for (name, upto) in more {
                    let seq = seqs.entry(name).or_insert(upto);
                    *seq = (*seq).max(upto);
                }
            }
            (_, op) => merged.push(op),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_reserves_every_stream_in_one_durable_write() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut disk = Disk::new(spool);
        let seqs: BTreeMap<String, u64> = [("s/a", 1025), ("s/b", 1030), ("sensor/cpu", 2000)]
            .into_iter()
            .map(|(name, upto)| (name.to_string(), upto))
            .collect();
        let before = disk.file_bytes();
        let mut done = Vec::new();
        disk.apply(SpoolOp::Reserve { seqs, epoch: 3 }, &mut done);
        assert!(
            matches!(
                &done[..],
                [SpoolDone::Reserved {
                    epoch: 3,
                    error: None,
                    ..
                }]
            ),
            "{done:?}"
        );
        // Each durable write is one frame and one sync: one frame (head,
        // count, then each name and seq) means one sync for all three.
        let one_frame = 11 + 4 + [3u64, 3, 10].iter().map(|n| 2 + n + 8).sum::<u64>();
        assert_eq!(disk.file_bytes() - before, one_frame);
        drop(disk);
        let (_, got) = Spool::open(dir.path()).unwrap();
        assert!(got.unclean, "the reservation is on disk");
        assert_eq!(got.seqs["s/b"], 1030);
        assert_eq!(got.seqs["sensor/cpu"], 2000);
    }

    #[test]
    fn ops_that_keep_coming_do_not_put_off_the_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let wal = dir.path().join("outbox.wal");
        let mut thread = SpoolThread::start(spool).unwrap();
        let record = Record {
            id: 1,
            created_ms: 0,
            topic: "s/a".into(),
            payload: b"1".to_vec(),
            retain: false,
            stream: None,
        };
        assert!(thread.send(vec![SpoolOp::Write(vec![record])]));
        // Forgetting the only record is written at the commit due
        // SYNC_INTERVAL from now.
        assert!(thread.send(vec![SpoolOp::Forget(vec![1])]));
        // Meanwhile ops keep coming, each a durable write (as on a card
        // whose writes crawl; each of its own epoch, so none are merged):
        // the thread never finds its inbox empty.
        let start = Instant::now();
        let (mut outstanding, mut upto) = (0i64, 0);
        while start.elapsed() < SYNC_INTERVAL * 5 {
            // More than a batch waits at any time.
            while outstanding < 2 * BATCH_MESSAGES as i64 {
                upto += 1;
                let seqs = BTreeMap::from([("s/a".to_string(), upto)]);
                assert!(thread.send(vec![SpoolOp::Reserve { seqs, epoch: upto }]));
                outstanding += 1;
            }
            match thread.wait_next() {
                Some(Answer::Done(_)) => outstanding -= 1,
                other => panic!("{other:?}"),
            }
        }
        // The forget reached the file: a copy of it, recovered, no longer
        // holds the record. (Not the inode: the frequent compactions of
        // the reservations' frames may hand the old number out again.)
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&wal, copy.path().join("outbox.wal")).unwrap();
        let (_, got) = Spool::open(copy.path()).unwrap();
        assert!(
            got.records.iter().all(|r| r.id != 1),
            "the forget was committed within {:?} while {upto} ops came",
            SYNC_INTERVAL * 5
        );
    }

    #[test]
    fn reservations_asked_one_by_one_while_the_disk_is_busy_cost_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let wal = dir.path().join("outbox.wal");
        let len = || std::fs::metadata(&wal).unwrap().len();
        let mut thread = SpoolThread::start(spool).unwrap();
        // The disk is busy: 40 durable writes that cannot be merged (each
        // of its own epoch).
        let busy: Vec<SpoolOp> = (1..=40)
            .map(|n| SpoolOp::Reserve {
                seqs: BTreeMap::from([("busy".to_string(), n)]),
                epoch: n,
            })
            .collect();
        let start = len();
        assert!(thread.send(busy));
        while len() == start {
            std::thread::yield_now();
        }
        // Meanwhile four messages each ask for a stream of their own, as
        // the first states of four outputs do.
        let streams = ["output/a", "output/b", "output/c", "output/d"];
        for name in streams {
            let seqs = BTreeMap::from([(name.to_string(), 1024)]);
            assert!(thread.send(vec![SpoolOp::Reserve { seqs, epoch: 99 }]));
        }
        assert!(thread.settle());
        let mut answered = Vec::new();
        loop {
            match thread.wait_next() {
                Some(Answer::Done(SpoolDone::Reserved {
                    seqs, epoch: 99, ..
                })) => {
                    answered.push(seqs.into_keys().collect::<Vec<_>>());
                }
                Some(Answer::Done(_)) => {}
                Some(Answer::Settled { .. }) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            answered,
            [streams.map(String::from).to_vec()],
            "one reservation, so one sync, for the four"
        );
    }

    fn big(id: u64) -> Record {
        Record {
            id,
            created_ms: 1,
            topic: "s/a".into(),
            payload: vec![b'x'; 1000],
            retain: false,
            stream: None,
        }
    }

    #[test]
    fn a_failed_automatic_compaction_is_answered_so_the_agent_logs_it() {
        let tiny = crate::outbox::tests::TinyDisk::mount(256 << 10);
        let (spool, _) = Spool::open(&tiny.path().join("outbox")).unwrap();
        let mut disk = Disk::new(spool);
        let mut done = Vec::new();
        disk.apply(SpoolOp::Write((1..=120).map(big).collect()), &mut done);
        assert!(disk.commit(&mut done));
        assert!(matches!(done[..], [SpoolDone::Written]), "{done:?}");
        done.clear();
        // Room for a forget frame, none for a compacted copy of 40 records.
        tiny.fill();
        let filler = tiny.path().join("filler");
        let size = std::fs::metadata(&filler).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(size - 8192)
            .unwrap();
        disk.apply(SpoolOp::Forget((1..=80).collect()), &mut done);
        disk.commit(&mut done);
        let said: Vec<String> = done
            .iter()
            .map(|d| match d {
                SpoolDone::Failed(e) => e.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert!(
            said.iter().any(|s| s.contains("No space left on device")),
            "the compaction's failure is answered: {said:?}"
        );
        assert_eq!(
            disk.spool.live_count(),
            40,
            "the forget itself went through"
        );
    }

    /// The sync step of the next test: held until the test opens it.
    static OPEN: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    static OPENED: std::sync::Condvar = std::sync::Condvar::new();

    fn held_sync(file: &File) -> std::io::Result<()> {
        let mut open = OPEN.lock().unwrap();
        while !*open {
            open = OPENED.wait(open).unwrap();
        }
        file.sync_data()
    }

    #[test]
    fn while_a_sync_crawls_writes_and_reads_go_on_and_a_reservation_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let (back, synced) = mpsc::channel();
        let mut disk = Disk::with_syncing(spool, back, held_sync);
        let mut done = Vec::new();
        disk.apply(SpoolOp::Write(vec![big(1)]), &mut done);
        disk.commit(&mut done);
        // The sync is running, and stuck; the spool's thread is not.
        disk.apply(SpoolOp::Write(vec![big(2)]), &mut done);
        disk.apply(SpoolOp::Read(vec![1, 2]), &mut done);
        let seqs = BTreeMap::from([("s/a".to_string(), 1024)]);
        disk.apply(SpoolOp::Reserve { seqs, epoch: 0 }, &mut done);
        let read = done.iter().find_map(|d| match d {
            SpoolDone::Read { records, .. } => Some(records.len()),
            _ => None,
        });
        assert_eq!(read, Some(2), "read back at once: {done:?}");
        assert!(
            !done.iter().any(|d| matches!(d, SpoolDone::Reserved { .. })),
            "a reservation is not answered before its sync: {done:?}"
        );
        done.clear();
        *OPEN.lock().unwrap() = true;
        OPENED.notify_all();
        // The first sync began before the reservation: it does not cover it.
        let Ok(Message::Synced { ticket, error }) = synced.recv() else {
            panic!("no sync reported");
        };
        disk.synced(ticket, error, &mut done);
        assert!(done.is_empty(), "{done:?}");
        let Ok(Message::Synced { ticket, error }) = synced.recv() else {
            panic!("no second sync");
        };
        disk.synced(ticket, error, &mut done);
        assert!(
            matches!(done[..], [SpoolDone::Reserved { error: None, .. }]),
            "{done:?}"
        );
    }
}
